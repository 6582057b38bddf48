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

/// The agents a list filter selects: its `FROM` and `WHERE`, with parameters numbered from `$1`.
pub struct Selection {
    pub from_where: String,
    pub params: Vec<Param>,
    /// Whether `from_where` has a `WHERE`.
    conditioned: bool,
}

impl Selection {
    /// Whether it selects fewer than all agents.
    pub fn is_conditioned(&self) -> bool {
        self.conditioned
    }

    /// Its `FROM` and `WHERE`, with `condition` too.
    pub fn and(&self, condition: &str) -> String {
        let joiner = if self.conditioned { "AND" } else { "WHERE" };
        format!("{} {joiner} {condition}", self.from_where)
    }
}

/// The selection of a list filter.
pub fn selection(filter: &ListFilter) -> Selection {
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
    if let Some(verdict) = filter.verdict {
        push("cloud_verdict = $?", Param::Text(verdict.as_str().into()));
    }
    if let Some(enabled) = filter.enabled {
        push("enabled = $?", Param::Int(enabled.into()));
    }
    if let Some(text) = &filter.text {
        let escaped = text
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        // The searched columns as one lower-cased text, matched once instead of six times: a
        // scan, for the seconds the agent index takes to load, and what it cannot answer.
        let condition = "LOWER(ip || ' ' || hostname || ' ' || COALESCE(group_name, '') || ' ' \
                         || os || ' ' || version || ' ' || COALESCE(machine_id, '')) \
                         LIKE $? ESCAPE '\\'";
        push(condition, Param::Text(format!("%{escaped}%")));
    }
    if filter.source_differs {
        conditions.push("source_ip IS NOT NULL AND source_ip <> ip".into());
    }
    let conditioned = !conditions.is_empty();
    let from_where = if conditioned {
        format!("FROM agents WHERE {}", conditions.join(" AND "))
    } else {
        "FROM agents".to_string()
    };
    Selection {
        from_where,
        params,
        conditioned,
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
        let selected = selection(&filter);
        assert!(
            selected
                .from_where
                .starts_with("FROM agents WHERE status = $1 AND LOWER(ip || "),
            "{}",
            selected.from_where
        );
        assert!(selected.from_where.ends_with("LIKE $2 ESCAPE '\\'"));
        assert!(matches!(&selected.params[1], Param::Text(t) if t == "%waf\\_1\\%%"));
    }
}
