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
pub(crate) struct Entry<C> {
    /// [`time_key`] of the due time.
    pub(crate) time: u64,
    /// Order among calls due at the same time.
    pub(crate) rank: u64,
    /// The call.
    pub(crate) call: C,
}

impl<C> Entry<C> {
    #[inline]
    fn less(&self, other: &Entry<C>) -> bool {
        self.time < other.time || (self.time == other.time && self.rank < other.rank)
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

impl<C> TimerHeap<C> {
    pub(crate) fn push(&mut self, entry: Entry<C>) {
        self.items.push(entry);
        self.sift_up(self.items.len() - 1);
    }

    pub(crate) fn peek(&self) -> Option<&Entry<C>> {
        self.items.first()
    }

    pub(crate) fn pop(&mut self) -> Option<Entry<C>> {
        if self.items.is_empty() {
            return None;
        }
        let top = self.items.swap_remove(0);
        if !self.items.is_empty() {
            self.sift_down(0);
        }
        Some(top)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if !self.items[i].less(&self.items[parent]) {
                break;
            }
            self.items.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let len = self.items.len();
        loop {
            let first = i * ARITY + 1;
            if first >= len {
                break;
            }
            let last = (first + ARITY).min(len);
            let mut least = first;
            for child in first + 1..last {
                if self.items[child].less(&self.items[least]) {
                    least = child;
                }
            }
            if !self.items[least].less(&self.items[i]) {
                break;
            }
            self.items.swap(i, least);
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
    fn nan_sorts_last_and_zeros_are_equal() {
        assert!(time_key(f64::NAN) > time_key(f64::INFINITY));
        assert_eq!(time_key(-0.0), time_key(0.0));
        assert!(time_key(-1.0) < time_key(0.0));
        assert!(time_key(f64::NEG_INFINITY) < time_key(-1.0));
    }
}
