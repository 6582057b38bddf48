//! The agent list as CSV (RFC 4180), safe to open in a spreadsheet, a line at a time.

use plura_proto::{Agent, Timestamp};

const HEADER: [&str; 19] = [
    "id",
    "ip",
    "hostname",
    "status",
    "enabled",
    "group",
    "kind",
    "os",
    "version",
    "machine_id",
    "source_ip",
    "registered_at",
    "last_login_at",
    "last_seen_at",
    "last_takeover_at",
    "instance_id",
    "zone",
    "instance_type",
    "asg",
];

/// The header line.
pub fn header() -> String {
    let mut out = String::new();
    push_row(&mut out, HEADER.iter().map(|h| h.to_string()));
    out
}

/// One agent's line.
pub fn row(a: &Agent) -> String {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    let mut out = String::with_capacity(160);
    push_row(
        &mut out,
        [
            a.id.to_string(),
            a.ip.clone(),
            a.hostname.clone(),
            a.status.to_string(),
            if a.enabled { "on" } else { "off" }.into(),
            a.group.clone().unwrap_or_default(),
            a.kind.clone(),
            a.os.clone(),
            a.version.clone(),
            a.machine_id.clone().unwrap_or_default(),
            a.source_ip.clone().unwrap_or_default(),
            a.registered_at.to_string(),
            time(a.last_login_at),
            time(a.last_seen_at),
            time(a.last_takeover_at),
            a.cloud.instance_id.clone().unwrap_or_default(),
            a.cloud.zone.clone().unwrap_or_default(),
            a.cloud.instance_type.clone().unwrap_or_default(),
            a.cloud.asg.clone().unwrap_or_default(),
        ],
    );
    out
}

fn push_row(out: &mut String, fields: impl IntoIterator<Item = String>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&escape(&field));
    }
    out.push_str("\r\n");
}

/// Quotes what needs quoting, and defuses text a spreadsheet would run as a formula: hostnames
/// and groups come from agents and operators, not from us.
fn escape(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(escape("waf-1"), "waf-1");
        assert_eq!(escape("a,b"), "\"a,b\"");
        assert_eq!(escape("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(escape("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(escape("-1"), "'-1");
    }
}
