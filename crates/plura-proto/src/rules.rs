//! The rules every field must meet: addresses a host can really have, and names and texts that
//! show as what they are (no control, invisible or direction-changing characters).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Longest hostname DNS allows.
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest label of a hostname (between dots).
const MAX_LABEL_LEN: usize = 63;
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

/// Deserializes a hostname in its normal form: lower case (DNS compares names without regard to
/// case, RFC 4343) and without the trailing dot of a fully qualified spelling, so `WAF-1.` and
/// `waf-1` are one host. Whether it is a hostname at all is for the rules.
pub fn hostname_form<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(normal_hostname(&String::deserialize(d)?))
}

/// `hostname` lower-cased (ASCII letters only: nothing else is allowed in one) and without one
/// trailing dot.
pub fn normal_hostname(hostname: &str) -> String {
    hostname
        .strip_suffix('.')
        .unwrap_or(hostname)
        .to_ascii_lowercase()
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
    validate_hostname(hostname)
}

/// A hostname as DNS and the kernel allow one: dot-separated labels of ASCII letters, digits,
/// hyphens and underscores, each 1 to 63 bytes, 253 in all. Nothing else, so that no two names
/// that look alike (`ｗａｆ-1`, a Cyrillic `а`, an invisible filler) can be two agents.
pub fn validate_hostname(hostname: &str) -> Result<(), FieldError> {
    let rule = "a hostname is dot-separated labels of ASCII letters, digits, '-' and '_', each \
                1 to 63 bytes, 253 in all";
    let wrong = |problem: String| field_error("hostname", format!("{problem}; {rule}"));
    if hostname.is_empty() {
        return Err(wrong("must not be empty".into()));
    }
    if hostname.len() > MAX_HOSTNAME_LEN {
        return Err(wrong(format!("is {} bytes long", hostname.len())));
    }
    if let Some(c) = hostname
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(wrong(format!(
            "{c:?} (U+{:04X}) is not allowed",
            u32::from(c)
        )));
    }
    if let Some(label) = hostname
        .split('.')
        .find(|label| label.is_empty() || label.len() > MAX_LABEL_LEN)
    {
        return Err(wrong(format!(
            "the label {label:?} is {} bytes long",
            label.len()
        )));
    }
    Ok(())
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
    if let Some(c) = value
        .chars()
        .find(|c| is_format(*c) || is_blank_lookalike(*c))
    {
        return Err(field_error(
            field,
            format!(
                "must not contain invisible, blank or direction-changing characters (U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Characters that show as nothing (or as a blank) without being format characters: the
/// default-ignorable fillers and selectors, and the blank braille pattern. A text with one can
/// pass for another that lacks it.
fn is_blank_lookalike(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_compare_as_dns_does() {
        assert_eq!(normal_hostname("WAF-1."), "waf-1");
        assert_eq!(normal_hostname("Web-01.Example.COM"), "web-01.example.com");
        for good in [
            "waf-1",
            "ip-10-0-0-1.ec2.internal",
            "host_name",
            &"a".repeat(63),
        ] {
            assert_eq!(validate_hostname(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn look_alike_hostnames_are_refused_naming_the_rule() {
        let too_long = format!("{}.{}", "a".repeat(63), "b".repeat(64));
        let emoji = "😀".repeat(63);
        for bad in [
            "ｗａｆ-1",
            "wаf-1",
            "waf\u{3164}1",
            "waf\u{115F}",
            "waf\u{FFA0}",
            "waf\u{034F}1",
            "waf\u{E0100}",
            "waf\u{2800}",
            "wafe\u{301}",
            "waf\u{2011}1",
            "waf 1",
            "",
            "a..b",
            ".waf",
            &too_long,
            &emoji,
        ] {
            let err = validate_hostname(bad).unwrap_err();
            assert!(
                err.problem.contains("dot-separated labels of ASCII"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn texts_refuse_fillers_and_blank_lookalikes() {
        for bad in [
            "Ubuntu\u{3164}",
            "\u{115F}",
            "x\u{FE0F}",
            "\u{2800}",
            "x\u{E0100}",
        ] {
            assert!(validate_text("os", bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate_text("os", "Ubuntu 24.04 LTS"), Ok(()));
        assert_eq!(
            validate_text("group", "웹 서버"),
            Ok(()),
            "other scripts are fine in text"
        );
    }
}
