//! Agents in the order of one sort key, ties broken by id (as the list's `ORDER BY column, id`),
//! kept in memory in blocks: a page at any offset is found by walking the blocks' lengths, where
//! the database skips the offset one index entry at a time (docs/performance.md has the figures).

/// Entries per block, at most twice this.
const BLOCK_ENTRIES: usize = 1024;

pub(super) struct Ordered<K> {
    blocks: Vec<Vec<(K, i64)>>,
}

impl<K: Ord> Ordered<K> {
    /// From entries in any order.
    pub(super) fn new(mut entries: Vec<(K, i64)>) -> Self {
        entries.sort_unstable();
        entries.dedup_by(|a, b| a == b);
        let mut blocks = Vec::with_capacity(entries.len() / BLOCK_ENTRIES + 1);
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            blocks.push(entries.by_ref().take(BLOCK_ENTRIES).collect());
        }
        Self { blocks }
    }

    /// The block `entry` belongs in: the last whose first entry is at or below it.
    fn block_of(&self, entry: &(K, i64)) -> usize {
        self.blocks
            .partition_point(|block| block[0] <= *entry)
            .saturating_sub(1)
    }

    pub(super) fn insert(&mut self, key: K, id: i64) {
        let entry = (key, id);
        if self.blocks.is_empty() {
            self.blocks.push(vec![entry]);
            return;
        }
        let index = self.block_of(&entry);
        let block = &mut self.blocks[index];
        let Err(at) = block.binary_search(&entry) else {
            return;
        };
        block.insert(at, entry);
        if block.len() > 2 * BLOCK_ENTRIES {
            let upper = block.split_off(block.len() / 2);
            self.blocks.insert(index + 1, upper);
        }
    }

    /// Removes the entries of the agents `gone` says are gone: one pass over all of them.
    pub(super) fn remove_all(&mut self, gone: impl Fn(i64) -> bool) {
        for block in &mut self.blocks {
            block.retain(|(_, id)| !gone(*id));
        }
        self.blocks.retain(|block| !block.is_empty());
    }

    /// The ids of `limit` entries from `offset`, in order or in reverse.
    pub(super) fn page(&self, offset: usize, limit: usize, descending: bool) -> Vec<i64> {
        let blocks = self.blocks.iter().map(Vec::as_slice);
        page_of_blocks(blocks, |(_, id)| *id, offset, limit, descending)
    }
}

/// The ids of `limit` items from `offset` of `blocks` (runs of items, in order), in order or in
/// reverse: whole blocks are skipped by their lengths.
pub(super) fn page_of_blocks<'a, T: 'a>(
    blocks: impl DoubleEndedIterator<Item = &'a [T]>,
    id: impl Fn(&T) -> i64,
    offset: usize,
    limit: usize,
    descending: bool,
) -> Vec<i64> {
    let blocks: Box<dyn Iterator<Item = &[T]>> = if descending {
        Box::new(blocks.rev())
    } else {
        Box::new(blocks)
    };
    let (mut skip, mut page) = (offset, Vec::with_capacity(limit.min(1024)));
    for block in blocks {
        if page.len() == limit {
            break;
        }
        if skip >= block.len() {
            skip -= block.len();
            continue;
        }
        let wanted = limit - page.len();
        if descending {
            page.extend(block.iter().rev().skip(skip).take(wanted).map(&id));
        } else {
            page.extend(block.iter().skip(skip).take(wanted).map(&id));
        }
        skip = 0;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_at_any_offset_either_way_as_a_sort_would() {
        // Keys with ties, out of order, some inserted after the start and some removed.
        let key = |id: i64| (id * 7919) % 1000;
        let mut ordered = Ordered::new((0..3000).map(|id| (key(id), id)).collect());
        for id in 3000..6000 {
            ordered.insert(key(id), id);
        }
        ordered.insert(key(5), 5);
        ordered.remove_all(|id| id % 7 == 0);
        let mut expected: Vec<(i64, i64)> = (0..6000)
            .filter(|id| id % 7 != 0)
            .map(|id| (key(id), id))
            .collect();
        expected.sort();
        let ids: Vec<i64> = expected.iter().map(|(_, id)| *id).collect();
        for offset in [0, 1, 1023, 1024, 2500, 5000, ids.len() - 3] {
            assert_eq!(
                ordered.page(offset, 100, false),
                ids[offset..(offset + 100).min(ids.len())],
                "from {offset}"
            );
            let reversed: Vec<i64> = ids.iter().rev().copied().collect();
            assert_eq!(
                ordered.page(offset, 100, true),
                reversed[offset..(offset + 100).min(ids.len())],
                "from {offset}, descending"
            );
        }
        assert!(ordered.page(ids.len(), 10, false).is_empty());
        assert!(ordered.blocks.iter().all(|b| b.len() <= 2 * BLOCK_ENTRIES));
    }
}
