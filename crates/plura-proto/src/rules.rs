//! The rules every field must meet: addresses a host can really have, and names and texts that
//! show as what they are (no control, invisible or direction-changing characters).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Longest hostname DNS allows; the server keeps whatever the host calls itself up to that.
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest version, OS, kind, machine id, group or user name.
pub const MAX_TEXT_LEN: usize = 128;

/// A field that breaks its rule, named so the sender can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldError {}

pub(crate) fn field_error(field: &'static str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field,
        problem: problem.into(),
    }
}

/// Deserializes an address, taking an IPv4-mapped IPv6 address as its IPv4 address, so one host
/// cannot be two agents under two spellings. Anything else is kept as sent, for the rules.
pub fn host_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let sent = String::deserialize(d)?;
    Ok(match std::net::Ipv6Addr::from_str(&sent) {
        Ok(v6) => v6.to_ipv4_mapped().map_or(sent, |v4| v4.to_string()),
        Err(_) => sent,
    })
}

/// The (ip, hostname) pair: an address an agent can really have, and a name a host can carry.
pub fn validate_identity(ip: &str, hostname: &str) -> Result<(), FieldError> {
    let addr = IpAddr::from_str(ip)
        .map_err(|_| field_error("ip", format!("{ip:?} is not an IPv4 or IPv6 address")))?;
    let broadcast = matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    if addr.is_unspecified() || addr.is_multicast() || broadcast {
        return Err(field_error(
            "ip",
            format!("{ip} cannot be a host's own address"),
        ));
    }
    if addr.to_string() != ip {
        return Err(field_error(
            "ip",
            format!("write {ip:?} in its canonical form {addr}"),
        ));
    }
    if hostname.is_empty() {
        return Err(field_error("hostname", "must not be empty"));
    }
    if hostname.chars().any(char::is_whitespace) {
        return Err(field_error(
            "hostname",
            "must not contain spaces or line breaks",
        ));
    }
    check_chars("hostname", hostname, MAX_HOSTNAME_LEN)
}

/// Free text (an OS name, a group): empty, or visible characters and plain spaces, not only
/// spaces.
pub fn validate_text(field: &'static str, value: &str) -> Result<(), FieldError> {
    if !value.is_empty() && value.trim().is_empty() {
        return Err(field_error(field, "must not be only spaces"));
    }
    if value.chars().any(|c| c.is_whitespace() && c != ' ') {
        return Err(field_error(
            field,
            "must not contain tabs, line breaks or other separators than a plain space",
        ));
    }
    check_chars(field, value, MAX_TEXT_LEN)
}

/// A value the agent list is filtered or searched by: anything a stored field could contain, so
/// no control characters (a NUL would break the search index's query) and no longer than a
/// hostname.
pub fn validate_filter(field: &'static str, value: &str) -> Result<(), FieldError> {
    check_chars(field, value, MAX_HOSTNAME_LEN)
}

pub fn validate_optional_text(field: &'static str, value: Option<&str>) -> Result<(), FieldError> {
    value.map_or(Ok(()), |v| validate_text(field, v))
}

fn check_chars(field: &'static str, value: &str, max: usize) -> Result<(), FieldError> {
    let len = value.chars().count();
    if len > max {
        return Err(field_error(
            field,
            format!("is {len} characters long; at most {max} are allowed"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(field_error(field, "must not contain control characters"));
    }
    if let Some(c) = value.chars().find(|c| is_format(*c)) {
        return Err(field_error(
            field,
            format!(
                "must not contain invisible or direction-changing characters (U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Unicode's format characters (category Cf): invisible, and some reorder the text around them
/// (`x\u{202e}gnp.exe` shows as `xexe.png`), so a name could pass for another.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}
