//! The timer heap both time sources keep their calls in: the deterministic
//! [`Clock`](crate::Clock) (Twisted's `task.Clock`, a sorted list there) and
//! the real reactor's timers (Twisted's `ReactorBase._pendingTimedCalls`, a
//! `heapq` there).
//!
//! A 4-ary min-heap of entries keyed by (due time, rank): half the depth of
//! a binary heap, and the children of a node share a cache line or two,
//! which matters with a million calls pending. Each user decides what a rank
//! means (the clock's list position, the reactor's scheduling order) and
//! which entries are still current; stale entries are skipped when they
//! surface and swept in bulk.

/// One heap entry: a call at `(time, rank)`.
#[derive(Clone, Copy)]
pub(crate) struct Entry<C> {
    /// [`time_key`] of the due time.
    pub(crate) time: u64,
    /// Order among calls due at the same time.
    pub(crate) rank: u64,
    /// The call.
    pub(crate) call: C,
}

impl<C> Entry<C> {
    /// The heap's order as one integer: time, then rank.
    #[inline]
    fn key(&self) -> u128 {
        (self.time as u128) << 64 | self.rank as u128
    }
}

/// A due time as an integer with the same order as Python's comparisons,
/// for the values Python can sort consistently (`-0.0 == 0.0`); `NaN`,
/// which Python cannot sort, goes after everything. Integer keys keep
/// comparisons cheap, in debug builds too.
#[inline]
pub(crate) fn time_key(t: f64) -> u64 {
    if t.is_nan() {
        return u64::MAX;
    }
    let bits = if t == 0.0 { 0 } else { t.to_bits() };
    if bits >> 63 == 0 {
        bits | 1 << 63
    } else {
        !bits
    }
}

/// A 4-ary min-heap of [`Entry`]s.
pub(crate) struct TimerHeap<C> {
    items: Vec<Entry<C>>,
}

impl<C> Default for TimerHeap<C> {
    fn default() -> Self {
        TimerHeap { items: Vec::new() }
    }
}

const ARITY: usize = 4;

#[inline]
fn parent(i: usize) -> usize {
    (i - 1) / ARITY
}

/// The ancestor of `i` that many levels up: `parent` applied `levels`
/// times, in closed form (`i` less the nodes of the `levels` top levels,
/// divided by `ARITY.pow(levels)`). `levels` is at most the heap's depth,
/// under 31 for any heap that fits in memory.
#[inline]
fn ancestor(i: usize, levels: u32) -> usize {
    const _: () = assert!(ARITY == 4);
    let shift = 2 * levels;
    let above = ((1 << shift) - 1) / 3;
    (i - above) >> shift
}

/// The index of the least of the children that start at `first` (which
/// must be `< items.len()`); the first of equals. A plain loop, which the
/// compiler keeps as branches: with a million entries, speculating down the
/// likely child hides the memory latency that branch-free selection
/// (conditional moves) exposes, about a fifth of a pop.
#[inline]
fn least_child<C>(items: &[Entry<C>], first: usize) -> usize {
    let children = &items[first..(first + ARITY).min(items.len())];
    let mut least = 0;
    for child in 1..children.len() {
        if children[child].key() < children[least].key() {
            least = child;
        }
    }
    first + least
}

impl<C> TimerHeap<C> {
    /// Adds an entry: the ancestors it goes before move down one level
    /// each, every entry moved once (no swaps).
    pub(crate) fn push(&mut self, entry: Entry<C>) {
        let key = entry.key();
        let items = &mut self.items;
        let len = items.len();
        // how many ancestors of the new slot go after the entry
        let mut i = len;
        let mut moved = 0;
        while i > 0 {
            let up = parent(i);
            if key >= items[up].key() {
                break;
            }
            i = up;
            moved += 1;
        }
        let mut carried = entry;
        for up in (1..=moved).rev() {
            carried = std::mem::replace(&mut items[ancestor(len, up)], carried);
        }
        items.push(carried);
    }

    pub(crate) fn peek(&self) -> Option<&Entry<C>> {
        self.items.first()
    }

    /// Removes the least entry. The last entry takes its place the way
    /// Floyd's heapsort does it: the vacancy goes down the path of least
    /// children to the bottom (one comparison fewer a level than sifting
    /// the last entry down), and the last entry climbs back from there,
    /// usually not at all; every entry moves once (no swaps).
    pub(crate) fn pop(&mut self) -> Option<Entry<C>> {
        let last = self.items.pop()?;
        let items = &mut self.items[..];
        if items.is_empty() {
            return Some(last);
        }
        let key = last.key();
        let mut i = 0;
        loop {
            let first = i * ARITY + 1;
            if first >= items.len() {
                break;
            }
            i = least_child(items, first);
        }
        // `last` takes the place of the lowest entry on the path that goes
        // before it (the root's if none does), which moves up one level
        // with every entry above it
        while i > 0 && items[i].key() >= key {
            i = parent(i);
        }
        let mut carried = last;
        loop {
            carried = std::mem::replace(&mut items[i], carried);
            if i == 0 {
                return Some(carried);
            }
            i = parent(i);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    fn sift_down(&mut self, mut i: usize) {
        let items = &mut self.items[..];
        loop {
            let first = i * ARITY + 1;
            if first >= items.len() {
                break;
            }
            let least = least_child(items, first);
            if items[least].key() >= items[i].key() {
                break;
            }
            items.swap(i, least);
            i = least;
        }
    }

    /// Keeps the entries `keep` accepts and restores the heap, in O(n).
    pub(crate) fn retain(&mut self, keep: impl FnMut(&Entry<C>) -> bool) {
        self.items.retain(keep);
        for i in (0..self.items.len() / ARITY + 1).rev() {
            self.sift_down(i);
        }
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Entry<C>> {
        self.items.iter()
    }

    pub(crate) fn into_vec(self) -> Vec<Entry<C>> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_rank_order() {
        let mut heap = TimerHeap::default();
        let keys = [(3.0, 1), (1.0, 5), (1.0, 2), (2.0, 0), (-1.0, 9), (0.0, 4)];
        for (i, &(t, rank)) in keys.iter().enumerate() {
            heap.push(Entry {
                time: time_key(t),
                rank,
                call: i,
            });
        }
        let order: Vec<usize> = std::iter::from_fn(|| heap.pop().map(|e| e.call)).collect();
        assert_eq!(order, [4, 5, 2, 1, 3, 0]);
    }

    #[test]
    fn retain_keeps_the_heap_ordered() {
        let mut heap = TimerHeap::default();
        for i in 0..1000u64 {
            heap.push(Entry {
                time: time_key(((i * 7919) % 1000) as f64),
                rank: i,
                call: i,
            });
        }
        heap.retain(|e| e.call % 3 != 0);
        let mut last = 0;
        while let Some(e) = heap.pop() {
            assert!(e.time >= last);
            assert_ne!(e.call % 3, 0);
            last = e.time;
        }
    }

    #[test]
    fn ancestor_is_parent_repeated() {
        for i in 1..5000usize {
            let (mut up, mut levels) = (i, 0);
            while up > 0 {
                up = parent(up);
                levels += 1;
                assert_eq!(ancestor(i, levels), up, "{i} {levels}");
            }
        }
    }

    #[test]
    fn interleaved_pushes_and_pops_match_a_sorted_list() {
        let mut heap = TimerHeap::default();
        let mut reference = std::collections::BTreeSet::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for rank in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                let popped = heap.pop().map(|e: Entry<u64>| (e.time, e.rank));
                assert_eq!(popped, reference.pop_first());
            } else {
                // few distinct times: many ties broken by rank
                let time = time_key((x % 64) as f64);
                heap.push(Entry {
                    time,
                    rank,
                    call: rank,
                });
                reference.insert((time, rank));
            }
        }
        while let Some(e) = heap.pop() {
            assert_eq!(Some((e.time, e.rank)), reference.pop_first());
        }
        assert!(reference.is_empty());
    }

    #[test]
    fn nan_sorts_last_and_zeros_are_equal() {
        assert!(time_key(f64::NAN) > time_key(f64::INFINITY));
        assert_eq!(time_key(-0.0), time_key(0.0));
        assert!(time_key(-1.0) < time_key(0.0));
        assert!(time_key(f64::NEG_INFINITY) < time_key(-1.0));
    }
}
