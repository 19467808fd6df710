//! Per-sender fair queueing of inbound messages (sans-IO).
//!
//! One connection carries every contact's messages in a single stream, and decrypting one costs
//! a database commit. Served in arrival order, one flooding sender would delay everybody else
//! for as long as its backlog lasts, and the backlog would grow without bound. [`FairQueue`]
//! keeps one bounded queue per sender and serves the senders round-robin: a flood only ever
//! delays another sender by one message, and what does not fit is dropped (and counted) on
//! arrival instead of piling up in memory.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Why [`FairQueue::push`] refused an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// This sender already has the most queued items one sender may have.
    Sender,
    /// All senders together have the most queued items allowed.
    Total,
}

/// Bounded per-key queues served round-robin.
#[derive(Debug)]
pub(crate) struct FairQueue<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    /// Keys with a non-empty queue, in serving order.
    turn: VecDeque<K>,
    len: usize,
    per_key: usize,
    total: usize,
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    /// A queue holding at most `per_key` items per key and `total` items in all.
    pub(crate) fn new(per_key: usize, total: usize) -> Self {
        Self {
            queues: HashMap::new(),
            turn: VecDeque::new(),
            len: 0,
            per_key,
            total,
        }
    }

    /// Queues `item` behind the other items of `key`, unless a bound is reached.
    pub(crate) fn push(&mut self, key: K, item: T) -> Result<(), Full> {
        if self.len >= self.total {
            return Err(Full::Total);
        }
        let queue = self.queues.entry(key.clone()).or_default();
        if queue.len() >= self.per_key {
            return Err(Full::Sender);
        }
        if queue.is_empty() {
            self.turn.push_back(key);
        }
        queue.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The oldest item of the key whose turn it is; that key goes to the back of the line.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<(K, T)> {
        self.pop_where(|_| true)
    }

    /// Like [`FairQueue::pop`], from the first key in line for which `ready` holds (the worker
    /// passes over senders with a message still being decrypted); the keys passed over keep
    /// their place.
    pub(crate) fn pop_where(&mut self, ready: impl FnMut(&K) -> bool) -> Option<(K, T)> {
        let index = self.turn.iter().position(ready)?;
        let key = self.turn.remove(index)?;
        let queue = self.queues.get_mut(&key)?;
        let item = queue.pop_front()?;
        self.len -= 1;
        if queue.is_empty() {
            self.queues.remove(&key);
        } else {
            self.turn.push_back(key.clone());
        }
        Some((key, item))
    }

    /// Items queued for `key`.
    pub(crate) fn queued(&self, key: &K) -> usize {
        self.queues.get(key).map_or(0, VecDeque::len)
    }

    /// Items queued in all.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_take_turns_whatever_the_arrival_order() {
        let mut queue = FairQueue::new(100, 1000);
        for i in 0..5 {
            queue.push("flood", i).unwrap();
        }
        queue.push("alice", 100).unwrap();
        queue.push("bob", 200).unwrap();
        let served: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(
            served,
            [
                ("flood", 0),
                ("alice", 100),
                ("bob", 200),
                ("flood", 1),
                ("flood", 2),
                ("flood", 3),
                ("flood", 4)
            ]
        );
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn each_sender_keeps_its_own_order() {
        let mut queue = FairQueue::new(100, 1000);
        for i in 0..50 {
            queue.push(i % 3, i).unwrap();
        }
        let mut last = HashMap::new();
        while let Some((key, item)) = queue.pop() {
            if let Some(previous) = last.insert(key, item) {
                assert!(previous < item, "{key}: {previous} before {item}");
            }
        }
        assert_eq!(last.len(), 3);
    }

    #[test]
    fn bounds_hold_per_sender_and_in_all() {
        let mut queue = FairQueue::new(3, 5);
        for i in 0..3 {
            queue.push("flood", i).unwrap();
        }
        assert_eq!(queue.push("flood", 3), Err(Full::Sender));
        assert_eq!(queue.queued(&"flood"), 3);
        queue.push("a", 0).unwrap();
        queue.push("b", 0).unwrap();
        assert_eq!(queue.push("c", 0), Err(Full::Total));
        assert_eq!(queue.len(), 5);
        // Serving one item makes room again.
        assert_eq!(queue.pop(), Some(("flood", 0)));
        queue.push("c", 0).unwrap();
        assert_eq!(queue.queued(&"c"), 1);
    }

    #[test]
    fn an_emptied_sender_starts_at_the_back_of_the_line() {
        let mut queue = FairQueue::new(10, 100);
        queue.push("a", 1).unwrap();
        queue.push("b", 1).unwrap();
        assert_eq!(queue.pop(), Some(("a", 1)));
        queue.push("a", 2).unwrap();
        assert_eq!(queue.pop(), Some(("b", 1)));
        assert_eq!(queue.pop(), Some(("a", 2)));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn keys_passed_over_keep_their_place_and_order() {
        let mut queue = FairQueue::new(10, 100);
        for (key, item) in [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2)] {
            queue.push(key, item).unwrap();
        }
        // "a" is busy: "b" is served, and "a" stays first in line.
        assert_eq!(queue.pop_where(|k| *k != "a"), Some(("b", 1)));
        assert_eq!(queue.pop_where(|k| *k != "a"), Some(("c", 1)));
        // Only "a" and "b" are left, both busy: nothing, and nothing is lost.
        assert_eq!(queue.pop_where(|k| *k != "a" && *k != "b"), None);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.pop(), Some(("a", 1)));
        assert_eq!(queue.pop(), Some(("b", 2)));
        assert_eq!(queue.pop(), Some(("a", 2)));
        assert_eq!(queue.pop(), None);
    }
}
