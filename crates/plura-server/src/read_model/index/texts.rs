//! The searched text of every agent, in blocks of contiguous bytes in id order, and the SIMD
//! substring scan over them that answers a search. A change rewrites only its agent's block.

use memchr::memmem::Finder;

use super::ordered::page_of_blocks;

/// Rows per block: a change rewrites its block, so blocks stay small; a scan goes block by
/// block, so they must not be tiny.
const BLOCK_ROWS: usize = 1024;
/// Blocks scanned under one hold of the lock, so a long scan lets changes in between.
pub(super) const SCAN_SLICE_BLOCKS: usize = 64;
/// Ends each row; never inside one, so a match never spans two agents.
pub(super) const ROW_END: u8 = b'\n';
/// The text a search matches: the searched columns, lower-cased, with single spaces between
/// them, as `plura_agent_text` makes it in the database.
pub(super) fn searched_text(parts: [&str; 6]) -> Vec<u8> {
    let mut text = parts.join(" ").to_lowercase().into_bytes();
    for byte in &mut text {
        if *byte == ROW_END {
            *byte = b' ';
        }
    }
    text.push(ROW_END);
    text
}

/// Consecutive agents by id: row `i` is `bytes[ends[i - 1]..ends[i]]`, ending in `ROW_END`.
#[derive(Default)]
struct Block {
    ids: Vec<i64>,
    ends: Vec<usize>,
    bytes: Vec<u8>,
}

impl Block {
    fn span(&self, row: usize) -> std::ops::Range<usize> {
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        start..self.ends[row]
    }

    /// Puts `text` at `row`, in place of what was there when `replace`.
    fn put(&mut self, row: usize, id: i64, text: &[u8], replace: bool) {
        let span = if replace {
            self.span(row)
        } else {
            let at = if row == 0 { 0 } else { self.ends[row - 1] };
            self.ids.insert(row, id);
            self.ends.insert(row, at);
            at..at
        };
        let grown = text.len() as isize - span.len() as isize;
        self.bytes.splice(span, text.iter().copied());
        for end in &mut self.ends[row..] {
            *end = end.wrapping_add_signed(grown);
        }
    }

    fn remove(&mut self, row: usize) {
        let span = self.span(row);
        let len = span.len();
        self.bytes.drain(span);
        self.ids.remove(row);
        self.ends.remove(row);
        for end in &mut self.ends[row..] {
            *end -= len;
        }
    }

    /// The rows matching, in id order.
    fn matching(&self, finder: &Finder<'_>) -> Vec<i64> {
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = finder.find(&self.bytes[from..]) {
            let row = self.ends.partition_point(|&end| end <= from + at);
            found.push(self.ids[row]);
            from = self.ends[row];
        }
        found
    }
}

/// Every agent's searched text.
#[derive(Default)]
pub(super) struct Texts {
    blocks: Vec<Block>,
}

impl Texts {
    pub(super) fn len(&self) -> usize {
        self.blocks.iter().map(|block| block.ids.len()).sum()
    }

    /// The ids of `limit` agents from `offset`, in id order or in reverse.
    pub(super) fn page(&self, offset: usize, limit: usize, descending: bool) -> Vec<i64> {
        let blocks = self.blocks.iter().map(|block| block.ids.as_slice());
        page_of_blocks(blocks, |id| *id, offset, limit, descending)
    }

    /// The block `id` belongs in: the last whose first id is at or below it.
    fn block_of(&self, id: i64) -> usize {
        self.blocks
            .partition_point(|block| block.ids[0] <= id)
            .saturating_sub(1)
    }

    /// Puts an agent's text; answers whether the agent is new here.
    pub(super) fn put(&mut self, id: i64, text: &[u8]) -> bool {
        // Agents come in id order mostly: a new one past a full last block starts the next.
        let starts_a_block = self
            .blocks
            .last()
            .is_none_or(|b| b.ids.len() >= BLOCK_ROWS && b.ids[b.ids.len() - 1] < id);
        if starts_a_block {
            let mut block = Block::default();
            block.put(0, id, text, false);
            self.blocks.push(block);
            return true;
        }
        let index = self.block_of(id);
        let block = &mut self.blocks[index];
        let new = match block.ids.binary_search(&id) {
            Ok(row) if block.bytes[block.span(row)] == *text => false,
            Ok(row) => {
                block.put(row, id, text, true);
                false
            }
            Err(row) => {
                block.put(row, id, text, false);
                true
            }
        };
        if block.ids.len() > 2 * BLOCK_ROWS {
            let half = block.ids.len() / 2;
            let cut = block.ends[half - 1];
            let upper = Block {
                ids: block.ids.split_off(half),
                ends: block.ends.split_off(half).iter().map(|e| e - cut).collect(),
                bytes: block.bytes.split_off(cut),
            };
            self.blocks.insert(index + 1, upper);
        }
        new
    }

    pub(super) fn remove(&mut self, id: i64) {
        let index = self.block_of(id);
        let Some(block) = self.blocks.get_mut(index) else {
            return;
        };
        if let Ok(row) = block.ids.binary_search(&id) {
            block.remove(row);
            if block.ids.is_empty() {
                self.blocks.remove(index);
            }
        }
    }

    /// Up to `limit` agents matching, in id order (descending when asked), after `cursor`; and,
    /// when it stopped after `blocks_at_most` blocks, the cursor to go on from.
    pub(super) fn matching(
        &self,
        finder: &Finder<'_>,
        cursor: Option<i64>,
        descending: bool,
        limit: usize,
        blocks_at_most: usize,
    ) -> (Vec<i64>, Option<i64>) {
        let mut found = Vec::new();
        let beyond = |id: i64| match cursor {
            None => true,
            Some(cursor) if descending => id < cursor,
            Some(cursor) => id > cursor,
        };
        // From the block holding the cursor, unless the cursor ends it (where a slice stopped).
        let mut blocks: Box<dyn Iterator<Item = &Block>> = if descending {
            let end = cursor.map_or(self.blocks.len(), |c| {
                let at = self.block_of(c);
                at + usize::from(self.blocks.get(at).is_some_and(|b| b.ids[0] < c))
            });
            Box::new(self.blocks[..end].iter().rev())
        } else {
            let first = cursor.map_or(0, |c| {
                let at = self.block_of(c);
                at + usize::from(
                    self.blocks
                        .get(at)
                        .is_some_and(|b| b.ids[b.ids.len() - 1] <= c),
                )
            });
            Box::new(self.blocks.iter().skip(first))
        };
        let mut scanned = 0;
        while found.len() < limit {
            let Some(block) = blocks.next() else {
                return (found, None);
            };
            let mut matched = block.matching(finder);
            if descending {
                matched.reverse();
            }
            found.extend(matched.into_iter().filter(|&id| beyond(id)));
            scanned += 1;
            if scanned == blocks_at_most && found.len() < limit {
                let boundary = if descending {
                    block.ids[0]
                } else {
                    block.ids[block.ids.len() - 1]
                };
                return (found, Some(boundary));
            }
        }
        found.truncate(limit);
        (found, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Vec<u8> {
        searched_text([s, "", "", "", "", ""])
    }

    fn find(texts: &Texts, needle: &str, cursor: Option<i64>, descending: bool) -> Vec<i64> {
        texts
            .matching(
                &Finder::new(needle),
                cursor,
                descending,
                usize::MAX,
                usize::MAX,
            )
            .0
    }

    #[test]
    fn finds_substrings_in_id_order_either_way_from_a_cursor() {
        let mut texts = Texts::default();
        // Out of order, across many blocks, with some rewritten and some removed.
        let ids: Vec<i64> = (0..5 * BLOCK_ROWS as i64)
            .map(|n| (n * 7919) % 5120)
            .collect();
        for &id in &ids {
            texts.put(id, &text(&format!("host-{id} grp-{}", id % 10)));
        }
        for id in (0..5120).step_by(3) {
            texts.put(id, &text(&format!("HOST-{id} renamed")));
        }
        for id in (0..5120).step_by(5) {
            texts.remove(id);
        }
        let expected: Vec<i64> = (0..5120)
            .filter(|id| id % 5 != 0 && id % 3 != 0 && id % 10 == 7)
            .collect();
        assert_eq!(find(&texts, "grp-7", None, false), expected);
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(find(&texts, "grp-7", None, true), reversed);
        assert_eq!(find(&texts, "grp-7", Some(2000), false)[0], 2017);
        assert_eq!(find(&texts, "grp-7", Some(2017), true)[0], 1997);
        assert_eq!(
            texts
                .matching(&Finder::new("grp-7"), None, false, 3, usize::MAX)
                .0,
            expected[..3]
        );
        // Scanned a block at a time, going on from where each slice stopped.
        for (descending, whole) in [(false, &expected), (true, &reversed)] {
            let (mut sliced, mut cursor) = (Vec::new(), None);
            loop {
                let (found, next) =
                    texts.matching(&Finder::new("grp-7"), cursor, descending, usize::MAX, 1);
                sliced.extend(found);
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(&sliced, whole, "descending: {descending}");
        }
        assert_eq!(find(&texts, "host-12 renamed", None, false), [12]);
        assert_eq!(find(&texts, "host-10 ", None, false), Vec::<i64>::new());
        // A row's end is not a space: nothing matches across two agents.
        assert_eq!(find(&texts, "renamed host", None, false), Vec::<i64>::new());
        assert!(texts.blocks.iter().all(|b| b.ids.len() <= 2 * BLOCK_ROWS));
        assert!(
            texts
                .blocks
                .windows(2)
                .all(|w| w[0].ids.last() < w[1].ids.first())
        );
    }
}
