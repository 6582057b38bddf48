//! The agent list: pages by filter and sort (deep pages found in the agent index), searches,
//! counts from the counts kept beside the agents, exports a chunk at a time, and the summary.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};

use plura_proto::{Agent, AgentStatus, Summary};

use super::SqlStore;
use super::filter::{Selection, bind_params, order_by, selection};
use super::rows::{self, AGENT_COLUMNS};
use crate::store::{ListFilter, Listed, Result, SEARCH_COUNT_LIMIT, SortColumn};

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
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    let page = match filter.limit {
        Some(limit) => format!("LIMIT {limit} OFFSET {}", filter.offset),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE id IN ({}) {} {page}",
        ids.join(","),
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

/// Matches of a search checked against its other conditions at once, at first; more each time.
const FIRST_CHECK: usize = 1_024;
const LARGEST_CHECK: usize = 65_536;

impl SqlStore {
    /// The agents a search matches, found in the agent index, as many as its count and page
    /// need, in id order (descending when the page is sorted so); `None` while there is no
    /// index loaded.
    async fn indexed_matches(&self, filter: &ListFilter) -> Result<Option<Vec<i64>>> {
        let index = &self.agent_index;
        let (Some(text), Some(limit)) = (&filter.text, filter.limit) else {
            return Ok(None);
        };
        let by_id = filter.sort == SortColumn::Id;
        let counted = SEARCH_COUNT_LIMIT as usize + 1;
        let wanted = if by_id {
            counted.max((filter.offset as usize).saturating_add(limit as usize))
        } else {
            counted
        };
        let descending = by_id && filter.descending;
        let others = selection(&ListFilter {
            text: None,
            ..filter.clone()
        });
        let mut matched = Vec::new();
        let (mut cursor, mut chunk) = (None, FIRST_CHECK);
        loop {
            let asked = if others.is_conditioned() {
                chunk
            } else {
                wanted - matched.len()
            };
            // A scan of a million agents takes milliseconds: off the request threads. One that
            // fails leaves the search to the database.
            let scan = {
                let (index, text) = (index.clone(), text.clone());
                tokio::task::spawn_blocking(move || {
                    index.matching(&text, cursor, descending, asked)
                })
            };
            let Some(found) = scan.await.ok().flatten() else {
                return Ok(None);
            };
            let exhausted = found.len() < asked;
            cursor = found.last().copied().or(cursor);
            if others.is_conditioned() && !found.is_empty() {
                let ids: Vec<String> = found.iter().map(i64::to_string).collect();
                let sql = format!(
                    "SELECT id {} {}",
                    others.and(&format!("id IN ({})", ids.join(","))),
                    order_by(SortColumn::Id, descending)
                );
                let rows = bind_params(sqlx::query(&sql), &others.params)
                    .fetch_all(&self.pool)
                    .await?;
                matched.extend(rows::ids(&rows)?);
            } else {
                matched.extend(found);
            }
            if matched.len() >= wanted || exhausted {
                break;
            }
            chunk = (chunk * 4).min(LARGEST_CHECK);
        }
        matched.truncate(wanted);
        Ok(Some(matched))
    }

    /// A search reads its matches once: as many as its count and page need from the agent
    /// index, or up to the count limit from the database (a scan, while the index loads). Under
    /// the limit, the page is picked from them; over it, the count stops there, and the page is
    /// read as any other unless it is among the matches already read.
    async fn search(&self, filter: &ListFilter, selected: &Selection) -> Result<Listed> {
        let (matched, in_page_order) = match self.indexed_matches(filter).await? {
            Some(ids) => (ids, filter.sort == SortColumn::Id),
            None => {
                let capped = format!(
                    "SELECT id {} LIMIT {}",
                    selected.from_where,
                    SEARCH_COUNT_LIMIT + 1
                );
                let rows = bind_params(sqlx::query(&capped), &selected.params)
                    .fetch_all(&self.pool)
                    .await?;
                (rows::ids(&rows)?, false)
            }
        };
        if matched.len() as u64 <= SEARCH_COUNT_LIMIT {
            return Ok(Listed {
                total: matched.len() as u64,
                exact: true,
                agents: page_of(&self.pool, &matched, filter).await?,
            });
        }
        let over_the_limit = (SEARCH_COUNT_LIMIT, false);
        let (true, Some(limit)) = (in_page_order, filter.limit) else {
            return self.page(filter, selected, over_the_limit).await;
        };
        let start = (filter.offset as usize).min(matched.len());
        let end = (start + limit as usize).min(matched.len());
        let page = ListFilter {
            offset: 0,
            ..filter.clone()
        };
        Ok(Listed {
            total: SEARCH_COUNT_LIMIT,
            exact: false,
            agents: page_of(&self.pool, &matched[start..end], &page).await?,
        })
    }

    /// The page `filter` asks for of the agents `selected`, with their count.
    async fn page(
        &self,
        filter: &ListFilter,
        selected: &Selection,
        (total, exact): (u64, bool),
    ) -> Result<Listed> {
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
        Ok(Listed {
            total,
            exact,
            agents: rows::agents(&listed)?,
        })
    }

    /// One page of the agents `filter` matches, and how many match.
    pub(super) async fn listed(&self, filter: &ListFilter) -> Result<Listed> {
        let selected = selection(filter);
        if filter.text.is_some() {
            return self.search(filter, &selected).await;
        }
        let (from_where, params) = (&selected.from_where, &selected.params);
        let total = match counted_total(filter) {
            // A count the summary's counts already hold (no filter, or one on a counted column).
            Some((dimension, value)) => {
                let row = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n FROM agent_counts \
                     WHERE dimension = $1 AND ($2 IS NULL OR value = $2)",
                )
                .bind(dimension)
                .bind(value)
                .fetch_one(&self.pool)
                .await?;
                rows::count(&row, "n")?
            }
            None => {
                let count_sql = format!("SELECT COUNT(*) AS n {from_where}");
                let row = bind_params(sqlx::query(&count_sql), params)
                    .fetch_one(&self.pool)
                    .await?;
                rows::count(&row, "n")?
            }
        };
        // Deep pages of every agent in an order the index keeps are found there.
        let in_memory = match filter.limit {
            Some(limit) if filter.offset >= DEFERRED_JOIN_OFFSET && !selected.is_conditioned() => {
                let offset = usize::try_from(filter.offset).unwrap_or(usize::MAX);
                let index = &self.agent_index;
                index.page(filter.sort, filter.descending, offset, limit as usize)
            }
            _ => None,
        };
        if let Some(ids) = in_memory {
            let page = ListFilter {
                offset: 0,
                ..filter.clone()
            };
            return Ok(Listed {
                total,
                exact: true,
                agents: page_of(&self.pool, &ids, &page).await?,
            });
        }
        self.page(filter, &selected, (total, true)).await
    }

    /// Every agent `filter` matches, to `sink`, a chunk of rows at a time.
    pub(super) async fn each_listed(
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
    pub(super) async fn counted_summary(&self) -> Result<Summary> {
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
        Ok(summary)
    }
}
