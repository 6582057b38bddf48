//! The agent list, answered from memory where the index can: a search's matches are found in
//! the index (its other conditions checked by the database), and a deep page of every agent in
//! an order the index keeps is picked there; the database reads only the rows shown. Whatever
//! the index cannot answer, or while it loads, the database answers alone.

use super::ReadModel;
use crate::store::{self, ListFilter, Listed, SEARCH_COUNT_LIMIT, SortColumn};

/// From this offset on, a page of every agent is picked in the index.
const DEEP_PAGE_OFFSET: u64 = 1000;

/// Matches of a search checked against its other conditions at once, at first; more each time.
const FIRST_CHECK: usize = 1_024;
const LARGEST_CHECK: usize = 65_536;

impl ReadModel {
    /// One page of the agents `filter` matches, and how many match.
    pub async fn list(&self, filter: &ListFilter) -> store::Result<Listed> {
        if filter.text.is_some() {
            if let Some(matched) = self.indexed_matches(filter).await? {
                return self.search_page(filter, matched).await;
            }
        } else if let Some(ids) = self.deep_page(filter) {
            let page = ListFilter {
                offset: 0,
                ..filter.clone()
            };
            return Ok(Listed {
                total: self.store.count(filter).await?,
                exact: true,
                agents: self.store.agents_among(&ids, &page).await?,
            });
        }
        self.store.list(filter).await
    }

    /// The ids of a deep page of every agent in an order the index keeps; `None` for any
    /// other page, or while the index loads.
    fn deep_page(&self, filter: &ListFilter) -> Option<Vec<i64>> {
        let limit = filter.limit?;
        if filter.offset < DEEP_PAGE_OFFSET || filter.is_conditioned() {
            return None;
        }
        let offset = usize::try_from(filter.offset).unwrap_or(usize::MAX);
        self.index
            .page(filter.sort, filter.descending, offset, limit as usize)
    }

    /// The page of a search whose matches the index found (as many as its count and page need,
    /// in id order, descending when the page is sorted so). Under the count limit, the page is
    /// picked from them; over it, the count stops there, and the page is read as any other
    /// unless it is among the matches already found.
    async fn search_page(&self, filter: &ListFilter, matched: Vec<i64>) -> store::Result<Listed> {
        if matched.len() as u64 <= SEARCH_COUNT_LIMIT {
            return Ok(Listed {
                total: matched.len() as u64,
                exact: true,
                agents: self.store.agents_among(&matched, filter).await?,
            });
        }
        let agents = match filter.limit {
            Some(limit) if filter.sort == SortColumn::Id => {
                let start = (filter.offset as usize).min(matched.len());
                let end = (start + limit as usize).min(matched.len());
                let page = ListFilter {
                    offset: 0,
                    ..filter.clone()
                };
                self.store.agents_among(&matched[start..end], &page).await?
            }
            _ => self.store.page(filter).await?,
        };
        Ok(Listed {
            total: SEARCH_COUNT_LIMIT,
            exact: false,
            agents,
        })
    }

    /// The agents a search matches, found in the index, as many as its count and page need, in
    /// id order (descending when the page is sorted so); `None` while the index loads.
    async fn indexed_matches(&self, filter: &ListFilter) -> store::Result<Option<Vec<i64>>> {
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
        let others = ListFilter {
            text: None,
            ..filter.clone()
        };
        let conditioned = others.is_conditioned();
        let mut matched = Vec::new();
        let (mut cursor, mut chunk) = (None, FIRST_CHECK);
        loop {
            let asked = if conditioned {
                chunk
            } else {
                wanted - matched.len()
            };
            // A scan of a million agents takes milliseconds: off the request threads. One that
            // fails leaves the search to the database.
            let scan = {
                let (index, text) = (self.index.clone(), text.clone());
                tokio::task::spawn_blocking(move || {
                    index.matching(&text, cursor, descending, asked)
                })
            };
            let Some(found) = scan.await.ok().flatten() else {
                return Ok(None);
            };
            let exhausted = found.len() < asked;
            cursor = found.last().copied().or(cursor);
            if conditioned {
                matched.extend(self.store.narrow(&found, &others, descending).await?);
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
}
