//! The agents in memory: what a search and a deep page need of each.
//!
//! Each agent's searched text (its searched columns, lower-cased) is kept in blocks of contiguous
//! bytes in id order and found by a SIMD substring scan (`texts.rs`), where the database would
//! read an index's lists of the trigrams nearly every agent has (`sca`, `le-`, `gro`) whatever
//! the matches. The agents are also kept in the order of the sort keys that never change (id,
//! address, registration time), so a page deep in the list is found without skipping its offset
//! entry by entry.
//!
//! It also knows every registered identity (address and hostname), so that a login can tell a
//! first registration from a return without asking the database first.
//!
//! The index follows this server's commits and the changes every server tells. It is loaded when
//! the server starts, and loaded again when news was missed; meanwhile the database answers, so
//! nothing is answered from an index that may be stale.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use memchr::memmem::Finder;
use tokio_util::sync::CancellationToken;

use plura_proto::Change;

mod ordered;
mod texts;

use ordered::Ordered;
use texts::{ROW_END, SCAN_SLICE_BLOCKS, Texts, searched_text};

use crate::store::{Changed, Result, Searchable, SortColumn, Store, ip_sort_key};

/// Agents read again at once after a load, for those changed while it ran.
const REREAD_CHUNK: usize = 10_000;

/// An identity (address, hostname) as the index keeps it: a hash, 8 bytes an agent.
fn identity_hash(ip: &str, hostname: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (ip, hostname).hash(&mut hasher);
    hasher.finish()
}

/// What the index keeps of an agent: its searched text, its identity, and its keys in the
/// orders kept (they never change: an address is half an identity, and a registration happens
/// once).
struct Entry {
    text: Vec<u8>,
    identity: u64,
    ip_key: Box<str>,
    registered_at: i64,
}

impl Entry {
    fn of(agent: &Searchable) -> Self {
        Self {
            text: searched_text([
                &agent.ip,
                &agent.hostname,
                agent.group.as_deref().unwrap_or(""),
                &agent.os,
                &agent.version,
                agent.machine_id.as_deref().unwrap_or(""),
            ]),
            identity: identity_hash(&agent.ip, &agent.hostname),
            ip_key: ip_sort_key(&agent.ip).into(),
            registered_at: agent.registered_at.as_millis(),
        }
    }
}

fn entry_of_agent(agent: &plura_proto::Agent) -> Entry {
    Entry::of(&Searchable::from(agent))
}

/// Every agent's entry, in id order and in the order of each key kept.
struct Indexed {
    texts: Texts,
    /// Every registered identity. A deleted agent's stays until the next load: it only makes
    /// a login of that identity look it up first, as one of a registered identity does.
    identities: HashSet<u64>,
    by_ip: Ordered<Box<str>>,
    by_registration: Ordered<i64>,
}

/// Every agent's entry as a load reads them, in id order; the orders are sorted once at the end.
#[derive(Default)]
struct Loaded {
    texts: Texts,
    identities: HashSet<u64>,
    by_ip: Vec<(Box<str>, i64)>,
    by_registration: Vec<(i64, i64)>,
}

impl Loaded {
    fn push(&mut self, id: i64, entry: Entry) {
        self.texts.put(id, &entry.text);
        self.identities.insert(entry.identity);
        self.by_ip.push((entry.ip_key, id));
        self.by_registration.push((entry.registered_at, id));
    }

    fn indexed(self) -> Indexed {
        Indexed {
            texts: self.texts,
            identities: self.identities,
            by_ip: Ordered::new(self.by_ip),
            by_registration: Ordered::new(self.by_registration),
        }
    }
}

impl Indexed {
    fn put(&mut self, id: i64, entry: Entry) {
        self.identities.insert(entry.identity);
        if self.texts.put(id, &entry.text) {
            self.by_ip.insert(entry.ip_key, id);
            self.by_registration.insert(entry.registered_at, id);
        }
    }

    fn remove_all(&mut self, gone: &HashSet<i64>) {
        if gone.is_empty() {
            return;
        }
        for &id in gone {
            self.texts.remove(id);
        }
        self.by_ip.remove_all(|id| gone.contains(&id));
        self.by_registration.remove_all(|id| gone.contains(&id));
    }

    /// The ids of a page of every agent sorted by `column`, if it is one kept in order.
    fn page(
        &self,
        column: SortColumn,
        descending: bool,
        offset: usize,
        limit: usize,
    ) -> Option<Vec<i64>> {
        Some(match column {
            SortColumn::Id => self.texts.page(offset, limit, descending),
            SortColumn::Ip => self.by_ip.page(offset, limit, descending),
            SortColumn::RegisteredAt => self.by_registration.page(offset, limit, descending),
            _ => return None,
        })
    }
}

enum State {
    /// Nobody listens for the other servers' changes: the index could not follow them.
    Unloaded,
    /// Being read from the database; the agents changed meanwhile are read again after.
    Loading {
        changed: HashSet<i64>,
    },
    Ready(Indexed),
}

/// What searches and deep pages need of every agent, once loaded.
pub struct AgentIndex {
    state: RwLock<State>,
    /// Bumped (under the state's lock) whenever a load is asked for: one that began before
    /// must begin again.
    missed: AtomicU64,
    reloading: tokio::sync::Mutex<()>,
}

impl Default for AgentIndex {
    fn default() -> Self {
        Self {
            state: RwLock::new(State::Unloaded),
            missed: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        }
    }
}

impl AgentIndex {
    /// Up to `limit` agents whose text holds `text` (any case), in id order (descending when
    /// asked), after `cursor`; `None` while the index is not loaded.
    pub fn matching(
        &self,
        text: &str,
        cursor: Option<i64>,
        descending: bool,
        limit: usize,
    ) -> Option<Vec<i64>> {
        let needle = text.to_lowercase();
        if needle.as_bytes().contains(&ROW_END) {
            // No agent's text holds one here; the database's may.
            return None;
        }
        let finder = Finder::new(&needle);
        let (mut found, mut cursor) = (Vec::new(), cursor);
        // A slice at a time, so the changes waiting for the lock wait for one slice, not for
        // a scan of every agent.
        loop {
            let (mut more, next) = {
                let state = self.state.read().expect("agent index lock");
                let State::Ready(indexed) = &*state else {
                    return None;
                };
                let wanted = limit - found.len();
                indexed
                    .texts
                    .matching(&finder, cursor, descending, wanted, SCAN_SLICE_BLOCKS)
            };
            found.append(&mut more);
            match next {
                Some(next) if found.len() < limit => cursor = Some(next),
                _ => return Some(found),
            }
        }
    }

    /// The ids of a page of every agent sorted by `column`; `None` while the index is not
    /// loaded, or for a column it keeps no order of.
    pub fn page(
        &self,
        column: SortColumn,
        descending: bool,
        offset: usize,
        limit: usize,
    ) -> Option<Vec<i64>> {
        match &*self.state.read().expect("agent index lock") {
            State::Ready(indexed) => indexed.page(column, descending, offset, limit),
            _ => None,
        }
    }

    /// Whether an agent holds the identity `ip`, `hostname`, as far as the index has heard;
    /// `None` while it is not loaded. A hint to choose the first step of a login by, not an
    /// answer: another server's registration may not have been told yet.
    pub fn registered(&self, ip: &str, hostname: &str) -> Option<bool> {
        match &*self.state.read().expect("agent index lock") {
            State::Ready(indexed) => {
                Some(indexed.identities.contains(&identity_hash(ip, hostname)))
            }
            _ => None,
        }
    }

    /// Follows changes this server committed.
    pub fn committed(&self, changes: &[&Changed]) {
        self.apply(
            changes
                .iter()
                .map(|c| (c.agent.id, (!c.is_gone()).then(|| entry_of_agent(&c.agent)))),
        );
    }

    /// Follows changes the change feed told (every server's, this one's too, in commit order).
    pub fn told(&self, changes: &[Change]) {
        self.apply(
            changes
                .iter()
                .map(|c| (c.agent_id, c.agent.as_ref().map(entry_of_agent))),
        );
    }

    /// Each agent's new entry, or `None` when it is gone.
    fn apply(&self, changes: impl Iterator<Item = (i64, Option<Entry>)>) {
        let mut state = self.state.write().expect("agent index lock");
        match &mut *state {
            State::Unloaded => {}
            State::Loading { changed } => changed.extend(changes.map(|(id, _)| id)),
            State::Ready(indexed) => {
                let mut gone = HashSet::new();
                for (id, entry) in changes {
                    match entry {
                        Some(entry) => indexed.put(id, entry),
                        None => drop(gone.insert(id)),
                    }
                }
                indexed.remove_all(&gone);
            }
        }
    }

    /// How many agents it holds, once loaded.
    pub fn agents(&self) -> Option<usize> {
        match &*self.state.read().expect("agent index lock") {
            State::Ready(indexed) => Some(indexed.texts.len()),
            _ => None,
        }
    }

    /// Whether the index follows the agents (it is loaded, or being loaded).
    pub fn followed(&self) -> bool {
        !matches!(
            *self.state.read().expect("agent index lock"),
            State::Unloaded
        )
    }

    /// Loads the index (again: news of changes was missed), until `stop`. Searches go to the
    /// database from now until it is done. Reloads asked for while one runs are folded into it.
    pub async fn reload(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        {
            let mut state = self.state.write().expect("agent index lock");
            self.missed.fetch_add(1, Ordering::SeqCst);
            *state = State::Loading {
                changed: HashSet::new(),
            };
        }
        let _turn = self.reloading.lock().await;
        // Ready again: a load that began after this was asked for has finished.
        while !matches!(
            *self.state.read().expect("agent index lock"),
            State::Ready(_)
        ) {
            let loaded = tokio::select! {
                () = stop.cancelled() => return,
                loaded = self.load(store.as_ref()) => loaded,
            };
            let Err(e) = loaded else {
                break;
            };
            tracing::warn!("loading the agent index: {e}; the database answers meanwhile");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        }
    }

    async fn load(&self, store: &dyn Store) -> Result<()> {
        'again: loop {
            let started = std::time::Instant::now();
            let missed = {
                let mut state = self.state.write().expect("agent index lock");
                *state = State::Loading {
                    changed: HashSet::new(),
                };
                self.missed.load(Ordering::SeqCst)
            };
            let mut loaded = Loaded::default();
            store
                .each_searchable(&mut |agent| loaded.push(agent.id, Entry::of(&agent)))
                .await?;
            let mut indexed = loaded.indexed();
            loop {
                let changed: Vec<i64> = {
                    let mut state = self.state.write().expect("agent index lock");
                    if self.missed.load(Ordering::SeqCst) != missed {
                        continue 'again;
                    }
                    let State::Loading { changed } = &mut *state else {
                        return Err(crate::store::StoreError::Invariant(
                            "only a load, in its turn, leaves an index being loaded".into(),
                        ));
                    };
                    if changed.is_empty() {
                        let agents = indexed.texts.len();
                        *state = State::Ready(indexed);
                        tracing::info!(
                            "agent index loaded: {agents} agents in {:.1?}",
                            started.elapsed()
                        );
                        return Ok(());
                    }
                    changed.drain().collect()
                };
                for chunk in changed.chunks(REREAD_CHUNK) {
                    let mut gone: HashSet<i64> = chunk.iter().copied().collect();
                    for agent in store.searchables_among(chunk).await? {
                        gone.remove(&agent.id);
                        indexed.put(agent.id, Entry::of(&agent));
                    }
                    indexed.remove_all(&gone);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: i64, hostname: &str) -> plura_proto::Agent {
        plura_proto::Agent {
            id,
            ip: "10.0.0.1".into(),
            hostname: hostname.into(),
            status: plura_proto::AgentStatus::Running,
            enabled: true,
            group: Some("Prod".into()),
            kind: "waf".into(),
            os: "Ubuntu\n24.04".into(),
            version: "5.1".into(),
            machine_id: None,
            source_ip: None,
            registered_at: plura_proto::Timestamp::from_millis(0),
            last_login_at: None,
            last_seen_at: None,
            last_takeover_at: None,
            cloud: Default::default(),
        }
    }

    #[test]
    fn the_text_is_the_searched_columns_lower_cased() {
        let agent = agent(1, "Web-1");
        assert_eq!(
            entry_of_agent(&agent).text,
            b"10.0.0.1 web-1 prod ubuntu 24.04 5.1 \n"
        );
    }

    #[tokio::test]
    async fn changes_while_loading_are_read_again_and_searches_wait_for_the_load() {
        let index = AgentIndex::default();
        assert_eq!(index.matching("a", None, false, 10), None, "unloaded");
        *index.state.write().unwrap() = State::Loading {
            changed: HashSet::new(),
        };
        let changed = Changed {
            agent: agent(4, "a"),
            events: Vec::new(),
        };
        index.committed(&[&changed]);
        assert_eq!(index.matching("a", None, false, 10), None, "loading");
        match &*index.state.read().unwrap() {
            State::Loading { changed } => assert_eq!(changed, &HashSet::from([4])),
            _ => panic!("still loading"),
        }
    }
}
