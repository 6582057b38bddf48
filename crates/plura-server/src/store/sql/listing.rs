//! The agent list in SQL: pages by filter and sort, searches by a capped scan, counts from the
//! counts kept beside the agents, the agents of ids found elsewhere (the read model's index),
//! exports a chunk at a time, and the summary.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::{AnyPool, Row};

use plura_proto::{Agent, AgentStatus, Summary};

use super::SqlStore;
use super::filter::{Selection, bind_params, order_by, selection};
use super::rows::{self, AGENT_COLUMNS, SEARCHABLE_COLUMNS, searchable};
use crate::store::{
    ListFilter, ListStore, Listed, Result, SEARCH_COUNT_LIMIT, Searchable, SortColumn,
};

/// Rows an export reads with one query.
const EXPORT_CHUNK: usize = 500;

/// From this offset on, a page is read by a deferred join.
const DEFERRED_JOIN_OFFSET: u64 = 1000;

/// The page `filter` asks for, of the agents `ids` (each an integer the database gave, so written
/// into the statement as it is).
async fn page_of(pool: &AnyPool, ids: &[i64], filter: &ListFilter) -> Result<Vec<Agent>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let page = match filter.limit {
        Some(limit) => format!("LIMIT {limit} OFFSET {}", filter.offset),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE id IN ({}) {} {page}",
        rows::id_list(ids),
        order_by(filter.sort, filter.descending)
    );
    rows::agents(&sqlx::query(&sql).fetch_all(pool).await?)
}

/// The (dimension, value) of `agent_counts` whose sum is how many agents `filter` matches: every
/// status (`None` value) for no filter, or the one counted column it filters on.
fn counted_total(filter: &ListFilter) -> Option<(&'static str, Option<String>)> {
    let ListFilter {
        status,
        group,
        kind,
        os,
        enabled,
        zone: None,
        asg: None,
        verdict: None,
        source_differs: false,
        text: None,
        ..
    } = filter
    else {
        return None;
    };
    // '' counts the agents with no group, which `group_name = ''` does not match.
    if group.as_deref() == Some("") {
        return None;
    }
    let mut counted = [
        status.map(|s| ("status", s.as_str().to_string())),
        group.clone().map(|g| ("group", g)),
        kind.clone().map(|k| ("kind", k)),
        os.clone().map(|o| ("os", o)),
        enabled.map(|e| ("enabled", if e { "1" } else { "0" }.to_string())),
    ]
    .into_iter()
    .flatten();
    match (counted.next(), counted.next()) {
        (None, _) => Some(("status", None)),
        (Some((dimension, value)), None) => Some((dimension, Some(value))),
        (Some(_), Some(_)) => None,
    }
}

impl SqlStore {
    /// A search in the database: its matches read once, up to the count limit (a scan). Under
    /// the limit, the page is picked from them; over it, the count stops there and the page is
    /// read as any other.
    async fn search(&self, filter: &ListFilter, selected: &Selection) -> Result<Listed> {
        let capped = format!(
            "SELECT id {} LIMIT {}",
            selected.from_where,
            SEARCH_COUNT_LIMIT + 1
        );
        let rows = bind_params(sqlx::query(&capped), &selected.params)
            .fetch_all(&self.pool)
            .await?;
        let matched = rows::ids(&rows)?;
        if matched.len() as u64 <= SEARCH_COUNT_LIMIT {
            return Ok(Listed {
                total: matched.len() as u64,
                exact: true,
                agents: page_of(&self.pool, &matched, filter).await?,
            });
        }
        Ok(Listed {
            total: SEARCH_COUNT_LIMIT,
            exact: false,
            agents: self.page_selected(filter, selected).await?,
        })
    }

    /// The page `filter` asks for of the agents `selected`.
    async fn page_selected(&self, filter: &ListFilter, selected: &Selection) -> Result<Vec<Agent>> {
        let from_where = &selected.from_where;
        let order = order_by(filter.sort, filter.descending);
        let list_sql = match filter.limit {
            // Deep pages skip their offset over ids alone (an index), and read only the rows
            // they show.
            Some(limit) if filter.offset >= DEFERRED_JOIN_OFFSET => format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE id IN (SELECT id {from_where} {order} \
                 LIMIT {limit} OFFSET {}) {}",
                filter.offset,
                order_by(filter.sort, filter.descending),
            ),
            Some(limit) => format!(
                "SELECT {AGENT_COLUMNS} {from_where} {order} LIMIT {limit} OFFSET {}",
                filter.offset
            ),
            None => format!("SELECT {AGENT_COLUMNS} {from_where} {order}"),
        };
        let listed = bind_params(sqlx::query(&list_sql), &selected.params)
            .fetch_all(&self.pool)
            .await?;
        rows::agents(&listed)
    }

    /// How many agents `selected` (of `filter`) holds: from the counts kept beside the agents
    /// when they hold it (no filter, or one on a counted column), else counted.
    async fn count_selected(&self, filter: &ListFilter, selected: &Selection) -> Result<u64> {
        let row = match counted_total(filter) {
            Some((dimension, value)) => {
                sqlx::query(
                    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n FROM agent_counts \
                     WHERE dimension = $1 AND ($2 IS NULL OR value = $2)",
                )
                .bind(dimension)
                .bind(value)
                .fetch_one(&self.pool)
                .await?
            }
            None => {
                let count_sql = format!("SELECT COUNT(*) AS n {}", selected.from_where);
                bind_params(sqlx::query(&count_sql), &selected.params)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        rows::count(&row, "n")
    }
}

#[async_trait]
impl ListStore for SqlStore {
    async fn list(&self, filter: &ListFilter) -> Result<Listed> {
        let selected = selection(filter);
        if filter.text.is_some() {
            return self.search(filter, &selected).await;
        }
        Ok(Listed {
            total: self.count_selected(filter, &selected).await?,
            exact: true,
            agents: self.page_selected(filter, &selected).await?,
        })
    }

    async fn count(&self, filter: &ListFilter) -> Result<u64> {
        self.count_selected(filter, &selection(filter)).await
    }

    async fn page(&self, filter: &ListFilter) -> Result<Vec<Agent>> {
        self.page_selected(filter, &selection(filter)).await
    }

    async fn agents_among(&self, ids: &[i64], filter: &ListFilter) -> Result<Vec<Agent>> {
        page_of(&self.pool, ids, filter).await
    }

    async fn narrow(&self, ids: &[i64], filter: &ListFilter, descending: bool) -> Result<Vec<i64>> {
        let selected = selection(filter);
        if ids.is_empty() || !selected.is_conditioned() {
            return Ok(ids.to_vec());
        }
        let sql = format!(
            "SELECT id {} {}",
            selected.and(&format!("id IN ({})", rows::id_list(ids))),
            order_by(SortColumn::Id, descending)
        );
        let rows = bind_params(sqlx::query(&sql), &selected.params)
            .fetch_all(&self.pool)
            .await?;
        rows::ids(&rows)
    }

    async fn each_searchable(&self, each: &mut (dyn FnMut(Searchable) + Send)) -> Result<()> {
        let sql = format!("SELECT {SEARCHABLE_COLUMNS} FROM agents ORDER BY id");
        let mut rows = sqlx::query(&sql).fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            each(searchable(&row)?);
        }
        Ok(())
    }

    async fn searchables_among(&self, ids: &[i64]) -> Result<Vec<Searchable>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {SEARCHABLE_COLUMNS} FROM agents WHERE id IN ({})",
            rows::id_list(ids)
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(searchable).collect()
    }

    /// Every agent `filter` matches, to `sink`, a chunk of rows at a time.
    async fn list_each(
        &self,
        filter: &ListFilter,
        sink: &tokio::sync::mpsc::Sender<Result<Agent>>,
    ) -> Result<()> {
        // The matching ids in their order, in one short query; then their rows a chunk at a
        // time, each chunk its own short query: a reader that is slow (or stops) holds no
        // database connection between chunks.
        let selected = selection(filter);
        let sql = format!(
            "SELECT id {} {}",
            selected.from_where,
            order_by(filter.sort, filter.descending)
        );
        let ids: Vec<i64> = bind_params(sqlx::query(&sql), &selected.params)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<std::result::Result<_, _>>()?;
        let unpaged = ListFilter {
            limit: None,
            offset: 0,
            ..filter.clone()
        };
        for chunk in ids.chunks(EXPORT_CHUNK) {
            let mut agents = page_of(&self.pool, chunk, &unpaged).await?;
            // In the order the ids were listed: a sorted column may have changed since.
            let position: HashMap<i64, usize> =
                chunk.iter().enumerate().map(|(at, id)| (*id, at)).collect();
            agents.sort_by_key(|agent| position.get(&agent.id).copied());
            for agent in agents {
                if sink.send(Ok(agent)).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The console's cards, from the counts kept beside the agents.
    async fn summary(&self) -> Result<Summary> {
        let mut summary = Summary::default();
        let counts = sqlx::query(
            "SELECT dimension, value, CAST(SUM(n) AS BIGINT) AS n FROM agent_counts \
             GROUP BY dimension, value",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in counts {
            let n = rows::count(&row, "n")?;
            let value: String = row.try_get("value")?;
            if n == 0 {
                continue;
            }
            match row.try_get::<String, _>("dimension")?.as_str() {
                "status" => {
                    summary.registered += n;
                    match rows::parsed(&row, "value")? {
                        AgentStatus::Running => summary.running += n,
                        AgentStatus::Stopped => summary.stopped += n,
                        AgentStatus::Unknown => summary.unknown += n,
                    }
                }
                "enabled" if value == "0" => summary.disabled += n,
                "enabled" => summary.enabled += n,
                "kind" => {
                    summary.by_kind.insert(value, n);
                }
                "os" => {
                    summary.by_os.insert(value, n);
                }
                // '' stands for no group.
                "group" if !value.is_empty() => {
                    summary.by_group.insert(value, n);
                }
                _ => {}
            }
        }
        let verdicts = sqlx::query(
            "SELECT cloud_verdict, COUNT(*) AS n FROM agents WHERE cloud_verdict IS NOT NULL \
             GROUP BY cloud_verdict",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in verdicts {
            summary
                .by_verdict
                .insert(row.try_get("cloud_verdict")?, rows::count(&row, "n")?);
        }
        Ok(summary)
    }
}
