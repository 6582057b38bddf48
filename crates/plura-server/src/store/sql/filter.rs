//! The agent list's SQL: the `WHERE` of a filter, the `ORDER BY` of a sort column, and the key
//! that sorts addresses by value.

use std::net::IpAddr;

use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

use crate::store::{ListFilter, SortColumn};

/// A key that sorts addresses by value: IPv4 before IPv6, each numerically.
pub fn ip_sort_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("4:{:08x}", u32::from(v4)),
        Ok(IpAddr::V6(v6)) => format!("6:{:032x}", u128::from(v6)),
        Err(_) => format!("9:{ip}"),
    }
}

/// A value bound to a list query's `WHERE`.
pub enum Param {
    Text(String),
    Int(i64),
}

/// How free text is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSearch {
    /// SQLite's trigram index (`agents_text`, FTS5), for terms of three characters or more.
    Fts5Trigrams,
    /// `LIKE` on each agent's searched columns as one lower-cased text (`agent_texts`), which
    /// PostgreSQL's trigram index (pg_trgm) serves.
    TextTable,
}

/// The `WHERE` clause of a list filter, numbered from `$1`.
pub fn where_clause(filter: &ListFilter, search: TextSearch) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let mut push = |sql: &str, param: Param| {
        params.push(param);
        conditions.push(sql.replace("$?", &format!("${}", params.len())));
    };
    if let Some(status) = filter.status {
        push("status = $?", Param::Text(status.as_str().into()));
    }
    for (column, value) in [
        ("group_name", &filter.group),
        ("kind", &filter.kind),
        ("os", &filter.os),
        ("zone", &filter.zone),
        ("asg", &filter.asg),
    ] {
        if let Some(value) = value {
            push(&format!("{column} = $?"), Param::Text(value.clone()));
        }
    }
    if let Some(enabled) = filter.enabled {
        push("enabled = $?", Param::Int(enabled.into()));
    }
    if let Some(text) = &filter.text {
        if search == TextSearch::Fts5Trigrams && text.chars().count() >= 3 {
            // One quoted phrase: matched as a substring, case-insensitively.
            let phrase = format!("\"{}\"", text.replace('"', "\"\""));
            push(
                "id IN (SELECT rowid FROM agents_text WHERE agents_text MATCH $?)",
                Param::Text(phrase),
            );
        } else {
            let escaped = text
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let condition = match search {
                TextSearch::TextTable => {
                    "id IN (SELECT agent_id FROM agent_texts WHERE text LIKE $? ESCAPE '\\')"
                }
                // One lower-cased text per row, matched once, instead of six matches.
                TextSearch::Fts5Trigrams => {
                    "LOWER(ip || ' ' || hostname || ' ' || COALESCE(group_name, '') || ' ' || os \
                     || ' ' || version || ' ' || COALESCE(machine_id, '')) LIKE $? ESCAPE '\\'"
                }
            };
            push(condition, Param::Text(format!("%{escaped}%")));
        }
    }
    if filter.source_differs {
        conditions.push("source_ip IS NOT NULL AND source_ip <> ip".into());
    }
    if conditions.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", conditions.join(" AND ")), params)
    }
}

pub fn bind_params<'q>(
    mut query: Query<'q, Any, AnyArguments<'q>>,
    params: &[Param],
) -> Query<'q, Any, AnyArguments<'q>> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text.clone()),
            Param::Int(int) => query.bind(*int),
        };
    }
    query
}

pub fn order_by(column: SortColumn, descending: bool) -> String {
    let (column, nullable) = match column {
        SortColumn::Id => ("id", false),
        SortColumn::Ip => ("ip_key", false),
        SortColumn::Hostname => ("hostname", false),
        SortColumn::Status => ("status", false),
        SortColumn::Enabled => ("enabled", false),
        SortColumn::Group => ("group_name", true),
        SortColumn::Kind => ("kind", false),
        SortColumn::Os => ("os", false),
        SortColumn::Version => ("version", false),
        SortColumn::RegisteredAt => ("registered_at", false),
        SortColumn::LastLoginAt => ("last_login_at", true),
        SortColumn::LastSeenAt => ("last_seen_at", true),
    };
    let direction = if descending { "DESC" } else { "ASC" };
    // Ties break by id so pages are stable. Nulls sort first in both backends (SQLite's way;
    // PostgreSQL is told), which keeps a plain `column, id` order that an index can serve.
    let nulls = match (nullable, descending) {
        (true, false) => " NULLS FIRST",
        (true, true) => " NULLS LAST",
        (false, _) => "",
    };
    format!("ORDER BY {column} {direction}{nulls}, id {direction}")
}

#[cfg(test)]
mod tests {
    use plura_proto::AgentStatus;

    use super::*;

    #[test]
    fn ip_keys_sort_numerically() {
        let mut ips = ["10.0.0.10", "10.0.0.9", "::1", "9.255.255.255"];
        ips.sort_by_key(|ip| ip_sort_key(ip));
        assert_eq!(ips, ["9.255.255.255", "10.0.0.9", "10.0.0.10", "::1"]);
    }

    #[test]
    fn search_text_is_matched_literally() {
        let filter = ListFilter {
            status: Some(AgentStatus::Running),
            text: Some("WAF_1%".into()),
            ..ListFilter::default()
        };
        let (sql, params) = where_clause(&filter, TextSearch::TextTable);
        assert_eq!(
            sql,
            "WHERE status = $1 AND id IN (SELECT agent_id FROM agent_texts WHERE text LIKE $2 \
             ESCAPE '\\')"
        );
        assert!(matches!(&params[1], Param::Text(t) if t == "%waf\\_1\\%%"));

        let (sql, params) = where_clause(&filter, TextSearch::Fts5Trigrams);
        assert!(sql.ends_with("agents_text MATCH $2)"), "{sql}");
        assert!(matches!(&params[1], Param::Text(t) if t == "\"WAF_1%\""));
        let quoted = ListFilter {
            text: Some("a\"b".into()),
            ..ListFilter::default()
        };
        let (_, params) = where_clause(&quoted, TextSearch::Fts5Trigrams);
        assert!(matches!(&params[0], Param::Text(t) if t == "\"a\"\"b\""));
        let short = ListFilter {
            text: Some("ab".into()),
            ..ListFilter::default()
        };
        let (sql, _) = where_clause(&short, TextSearch::Fts5Trigrams);
        assert!(sql.contains("LIKE"), "too short for trigrams: {sql}");
    }
}
