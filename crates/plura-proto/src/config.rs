//! `plura.conf`, the agent's configuration: `key=value` lines, `#` comments and blank lines.
//!
//! Strict on purpose: a typo in a key would otherwise silently leave an agent logging in with
//! the wrong interface's address, which is exactly the duplicate entry the registry exists to
//! prevent. So an unknown key, a repeated key or a malformed line is an error naming the file
//! and line, and a bad value names its key and what is allowed.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::Fingerprint;

/// Where the agent looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/plura/conf/plura.conf";

/// Longest login delay accepted: an hour is already far beyond any boot.
const MAX_LOGIN_DELAY_SEC: u64 = 3600;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_INTERFACE_LEN: usize = 15;

const KEYS: &[&str] = &[
    "server_url",
    "enrollment_token",
    "interface",
    "interface_mon",
    "login_delay_sec",
    "login_hostname_check",
    "login_with_machine_id",
    "kind",
    "ca_file",
    "server_fingerprint",
    "allow_plain_http",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The management server, e.g. `https://plura.example.com:8080`, without a trailing `/`.
    pub server_url: String,
    /// The token agents log in with (`plura-server enrollment-token`).
    pub enrollment_token: String,
    /// Whose IPv4 is the agent's identity; `None`: the interface of the default route.
    pub interface: Option<String>,
    /// Which interface's traffic the WAF/SIEM engine watches. The engine reads the same file;
    /// the fleet agent only checks the value is an interface name, since what is watched is
    /// not part of the identity (that is `interface`) and the console does not show it.
    pub interface_mon: Option<String>,
    /// How long to wait at boot before the first login.
    pub login_delay: Duration,
    /// 0: wait the whole delay; 1 or 2: stop waiting once the hostname changed that many times.
    pub login_hostname_check: u8,
    /// Also send the instance's unique id.
    pub login_with_machine_id: bool,
    /// What the agent protects, shown in the console (`waf`, `siem`, `edr`, …).
    pub kind: String,
    /// A PEM file of CA certificates trusted besides the system's (a private CA).
    pub ca_file: Option<String>,
    /// The certificate (the server's own, or a CA's in its chain) the server must present.
    pub server_fingerprint: Option<Fingerprint>,
    /// Whether `http://` to a server off this host is accepted (the token then travels in the
    /// clear).
    pub allow_plain_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    /// The 1-based line at fault, when one is.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses the text of a configuration file; `path` is only used in messages.
pub fn parse(path: &str, text: &str) -> Result<AgentConfig, ConfigError> {
    let error = |line: Option<usize>, message: String| ConfigError {
        path: path.to_string(),
        line,
        message,
    };
    let mut values: Vec<(&str, &str, usize)> = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(error(
                Some(number),
                format!("expected key=value, found {line:?}"),
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if !KEYS.contains(&key) {
            return Err(error(
                Some(number),
                format!("unknown key {key:?}; known keys: {}", KEYS.join(", ")),
            ));
        }
        if let Some((_, _, first)) = values.iter().find(|(k, _, _)| *k == key) {
            return Err(error(
                Some(number),
                format!("{key} is already set on line {first}"),
            ));
        }
        values.push((key, value, number));
    }

    let get = |key: &str| values.iter().find(|(k, _, _)| *k == key).copied();
    let value_error = |key: &str, allowed: &str, value: &str| {
        let line = get(key).map(|(_, _, n)| n);
        error(line, format!("{key} = {value:?}: {allowed}"))
    };
    let required = |key: &str| match get(key) {
        Some((_, value, _)) if !value.is_empty() => Ok(value),
        Some((_, value, _)) => Err(value_error(key, "must not be empty", value)),
        None => Err(error(None, format!("missing {key}=…"))),
    };
    let optional = |key: &str| get(key).map(|(_, v, _)| v).filter(|v| !v.is_empty());
    let number = |key: &str, max: u64| -> Result<u64, ConfigError> {
        match optional(key) {
            None => Ok(0),
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    value_error(
                        key,
                        &format!("must be a whole number from 0 to {max}"),
                        value,
                    )
                }),
        }
    };
    let interface = |key: &str| -> Result<Option<String>, ConfigError> {
        match optional(key) {
            None => Ok(None),
            Some(name) if valid_interface_name(name) => Ok(Some(name.to_string())),
            Some(name) => Err(value_error(
                key,
                &format!(
                    "must be an interface name (at most {MAX_INTERFACE_LEN} letters, digits, \
                     '.', '-', '_' or '@'), e.g. eth1"
                ),
                name,
            )),
        }
    };

    let server_url = required("server_url")?;
    let rest = server_url
        .strip_prefix("http://")
        .or_else(|| server_url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(char::is_whitespace)) {
        return Err(value_error(
            "server_url",
            "must be an http:// or https:// URL, e.g. https://plura.example.com:8080",
            server_url,
        ));
    }
    let allow_plain_http = number("allow_plain_http", 1)? == 1;
    if is_plain_http_off_loopback(server_url) && !allow_plain_http {
        return Err(value_error(
            "server_url",
            "plain http:// would send the enrollment token and the agent's key in the clear; \
             use https://, or set allow_plain_http=1 to accept that (loopback servers need \
             neither)",
            server_url,
        ));
    }
    let server_fingerprint = match optional("server_fingerprint") {
        None => None,
        Some(value) => Some(
            value
                .parse::<Fingerprint>()
                .map_err(|allowed| value_error("server_fingerprint", &allowed, value))?,
        ),
    };
    let enrollment_token = required("enrollment_token")?;
    if enrollment_token.contains(char::is_whitespace) {
        return Err(value_error(
            "enrollment_token",
            "must not contain spaces",
            enrollment_token,
        ));
    }
    Ok(AgentConfig {
        server_url: server_url.trim_end_matches('/').to_string(),
        enrollment_token: enrollment_token.to_string(),
        interface: interface("interface")?,
        interface_mon: interface("interface_mon")?,
        login_delay: Duration::from_secs(number("login_delay_sec", MAX_LOGIN_DELAY_SEC)?),
        login_hostname_check: number("login_hostname_check", 2)? as u8,
        login_with_machine_id: number("login_with_machine_id", 1)? == 1,
        kind: optional("kind").unwrap_or("siem").to_string(),
        ca_file: optional("ca_file").map(str::to_string),
        server_fingerprint,
        allow_plain_http,
    })
}

/// Whether `url` is plain `http://` to another host than this one: what it carries (tokens,
/// keys) would cross the network in the clear.
pub fn is_plain_http_off_loopback(url: &str) -> bool {
    url.strip_prefix("http://")
        .map(url_host)
        .is_some_and(|host| !is_loopback(host))
}

/// The host of a URL's authority (`user@host:port/…`), without brackets around an IPv6 one.
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host_port.split(':').next().unwrap_or(host_port),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn valid_interface_name(name: &str) -> bool {
    name.len() <= MAX_INTERFACE_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/plura/conf/plura.conf";
    const MINIMAL: &str = "server_url=http://127.0.0.1:8080\nenrollment_token=plura_enroll_x\n";

    fn parse_ok(text: &str) -> AgentConfig {
        parse(PATH, text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> String {
        parse(PATH, text).unwrap_err().to_string()
    }

    #[test]
    fn the_seeds_auto_scaling_file_parses() {
        let config = parse_ok(
            "# PLURA agent\n\
             server_url = https://plura.example.com:8080/\r\n\
             enrollment_token=plura_enroll_abc\n\
             \n\
             interface=eth1\n\
             interface_mon=eth0\n\
             login_delay_sec=60\n\
             login_hostname_check=1\n\
             login_with_machine_id=1\n\
             kind=waf\n",
        );
        assert_eq!(
            config,
            AgentConfig {
                server_url: "https://plura.example.com:8080".into(),
                enrollment_token: "plura_enroll_abc".into(),
                interface: Some("eth1".into()),
                interface_mon: Some("eth0".into()),
                login_delay: Duration::from_secs(60),
                login_hostname_check: 1,
                login_with_machine_id: true,
                kind: "waf".into(),
                ca_file: None,
                server_fingerprint: None,
                allow_plain_http: false,
            }
        );
    }

    #[test]
    fn defaults_are_the_vendors() {
        let config = parse_ok(MINIMAL);
        assert_eq!(config.interface, None, "the default route's interface");
        assert_eq!(config.login_delay, Duration::ZERO);
        assert_eq!(config.login_hostname_check, 0);
        assert!(!config.login_with_machine_id);
        assert_eq!(config.kind, "siem");
        let empty_values = parse_ok(&format!("{MINIMAL}interface=\nlogin_delay_sec=\n"));
        assert_eq!(empty_values.interface, None);
    }

    #[test]
    fn a_line_without_equals_names_its_line() {
        let err = parse_err(&format!("{MINIMAL}# ok\ninterface eth1\n"));
        assert_eq!(
            err,
            "/etc/plura/conf/plura.conf:4: expected key=value, found \"interface eth1\""
        );
    }

    #[test]
    fn an_unknown_key_names_its_line_and_the_known_ones() {
        let err = parse_err(&format!("interfcae=eth1\n{MINIMAL}"));
        assert!(
            err.starts_with(&format!(
                "{PATH}:1: unknown key \"interfcae\"; known keys: server_url,"
            )),
            "{err}"
        );
    }

    #[test]
    fn a_repeated_key_names_both_lines() {
        let err = parse_err(&format!("{MINIMAL}interface=eth0\ninterface=eth1\n"));
        assert_eq!(err, format!("{PATH}:4: interface is already set on line 3"));
    }

    #[test]
    fn required_keys_must_be_there() {
        assert_eq!(
            parse_err("server_url=https://a\n"),
            format!("{PATH}: missing enrollment_token=…")
        );
        assert_eq!(
            parse_err("enrollment_token=x\nserver_url=\n"),
            format!("{PATH}:2: server_url = \"\": must not be empty")
        );
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        for (line, expected) in [
            (
                "login_delay_sec=soon",
                "login_delay_sec = \"soon\": must be a whole number from 0 to 3600",
            ),
            (
                "login_delay_sec=-1",
                "login_delay_sec = \"-1\": must be a whole number from 0 to 3600",
            ),
            (
                "login_delay_sec=3601",
                "login_delay_sec = \"3601\": must be a whole number from 0 to 3600",
            ),
            (
                "login_hostname_check=3",
                "login_hostname_check = \"3\": must be a whole number from 0 to 2",
            ),
            (
                "login_with_machine_id=yes",
                "login_with_machine_id = \"yes\": must be a whole number from 0 to 1",
            ),
            (
                "interface=eth 1",
                "interface = \"eth 1\": must be an interface name",
            ),
            (
                "interface_mon=averyveryverylongname",
                "interface_mon = \"averyveryverylongname\": must be an interface name",
            ),
        ] {
            let err = parse_err(&format!("{MINIMAL}{line}\n"));
            assert!(
                err.starts_with(&format!("{PATH}:3: {expected}")),
                "{line}: {err}"
            );
        }
        let err = parse_err("server_url=ftp://x\nenrollment_token=t\n");
        assert!(
            err.starts_with(&format!(
                "{PATH}:1: server_url = \"ftp://x\": must be an http://"
            )),
            "{err}"
        );
        let err = parse_err("server_url=https://x\nenrollment_token=a b\n");
        assert_eq!(
            err,
            format!("{PATH}:2: enrollment_token = \"a b\": must not contain spaces")
        );
    }

    #[test]
    fn comments_blank_lines_crlf_and_bom_are_fine() {
        let config = parse_ok(&format!("\u{feff}# top\r\n\r\n   # indented\r\n{MINIMAL}"));
        assert_eq!(config.server_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn plain_http_off_this_host_needs_allow_plain_http() {
        for loopback in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://[::1]:80/",
        ] {
            parse_ok(&format!("server_url={loopback}\nenrollment_token=t\n"));
        }
        let text = "enrollment_token=t\nserver_url=http://plura.example.com:8080\n";
        let err = parse_err(text);
        assert!(
            err.starts_with(&format!(
                "{PATH}:2: server_url = \"http://plura.example.com:8080\": plain http://"
            )) && err.contains("allow_plain_http=1"),
            "{err}"
        );
        let err = parse_err("enrollment_token=t\nserver_url=http://127.0.0.1.evil.com/\n");
        assert!(err.contains("allow_plain_http"), "{err}");
        let allowed = parse_ok(&format!("{text}allow_plain_http=1\n"));
        assert!(allowed.allow_plain_http);
    }

    #[test]
    fn trust_settings_are_read_and_checked() {
        let pin = format!("sha256:{}", "ab".repeat(32));
        let config = parse_ok(&format!(
            "server_url=https://plura.example.com\nenrollment_token=t\n\
             ca_file=/etc/plura/conf/ca.pem\nserver_fingerprint={pin}\n"
        ));
        assert_eq!(config.ca_file.as_deref(), Some("/etc/plura/conf/ca.pem"));
        assert_eq!(config.server_fingerprint, Some(pin.parse().unwrap()));
        let err = parse_err(&format!("{MINIMAL}server_fingerprint=sha1:00\n"));
        assert!(
            err.starts_with(&format!(
                "{PATH}:3: server_fingerprint = \"sha1:00\": must be sha256:"
            )),
            "{err}"
        );
    }

    #[test]
    fn values_may_hold_equals_signs() {
        let config = parse_ok("server_url=https://h/?a=b\nenrollment_token=abc==\n");
        assert_eq!(config.enrollment_token, "abc==");
    }
}
