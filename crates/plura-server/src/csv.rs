//! The agent list as CSV (RFC 4180), safe to open in a spreadsheet, a line at a time.
//!
//! Every text field is quoted, whatever it holds: a spreadsheet set to split on `;` or a tab
//! (German and French Excel) would otherwise split an unquoted `Ubuntu;=1+1;` and run the
//! formula it starts. Text that opens like a formula is defused with a leading `'` as well.

use plura_proto::{Agent, Timestamp};

const HEADER: [&str; 21] = [
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
    "verdict",
    "verdict_at",
];

/// The header line.
pub fn header() -> String {
    let mut out = String::new();
    push_row(&mut out, HEADER.iter().map(|h| Field::Text(h.to_string())));
    out
}

/// A field: a number goes as it is, text is quoted.
enum Field {
    Number(i64),
    Text(String),
}

/// One agent's line.
pub fn row(a: &Agent) -> String {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    let mut out = String::with_capacity(200);
    let texts = [
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
        a.cloud.labels.instance_id.clone().unwrap_or_default(),
        a.cloud.labels.zone.clone().unwrap_or_default(),
        a.cloud.labels.instance_type.clone().unwrap_or_default(),
        a.cloud.labels.asg.clone().unwrap_or_default(),
        a.cloud.verdict.map(|v| v.to_string()).unwrap_or_default(),
        time(a.cloud.verdict_at),
    ];
    let fields = std::iter::once(Field::Number(a.id)).chain(texts.into_iter().map(Field::Text));
    push_row(&mut out, fields);
    out
}

fn push_row(out: &mut String, fields: impl IntoIterator<Item = Field>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match field {
            Field::Number(n) => out.push_str(&n.to_string()),
            Field::Text(text) => out.push_str(&quoted(&text)),
        }
    }
    out.push_str("\r\n");
}

/// Quoted, with text a spreadsheet would run as a formula defused: hostnames and groups come
/// from agents and operators, not from us.
fn quoted(field: &str) -> String {
    let defused = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_always_quoted_and_formulas_defused() {
        assert_eq!(quoted("waf-1"), "\"waf-1\"");
        assert_eq!(quoted("a,b"), "\"a,b\"");
        assert_eq!(quoted("Ubuntu;=1+1;"), "\"Ubuntu;=1+1;\"");
        assert_eq!(quoted("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quoted("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(quoted("-1"), "\"'-1\"");
        assert!(header().starts_with("\"id\",\"ip\","));
    }
}
