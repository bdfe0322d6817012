//! Which offset is safe to store when messages of one partition finish out of order.
//!
//! Handlers run concurrently, so message 7 may finish before message 5. Storing 7 would
//! commit 5 and 6 as done; after a crash they would never be handled. The tracker stores the
//! highest offset below which everything has finished.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug)]
struct Partition {
    first: i64,
    max_begun: i64,
    in_flight: BTreeSet<i64>,
}

/// Per (topic, partition) bookkeeping of messages being handled.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: HashMap<(String, i32), Partition>,
}

impl OffsetTracker {
    /// A message was handed to a handler.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        let fresh = || Partition {
            first: offset,
            max_begun: offset - 1,
            in_flight: BTreeSet::new(),
        };
        let p = self
            .parts
            .entry((topic.to_owned(), partition))
            .or_insert_with(fresh);
        if offset <= p.max_begun {
            // The consumer rewound (rebalance, seek): start over from here.
            *p = fresh();
        }
        p.in_flight.insert(offset);
        p.max_begun = offset;
    }

    /// A message finished. Returns the offset to store (the last one handled with nothing
    /// unfinished before it), if there is one.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.parts.get_mut(&(topic.to_owned(), partition))?;
        p.in_flight.remove(&offset);
        let safe = match p.in_flight.first() {
            Some(min) => min - 1,
            None => p.max_begun,
        };
        (safe >= p.first).then_some(safe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_below_the_oldest_unfinished() {
        let mut t = OffsetTracker::default();
        for o in 10..=13 {
            t.begin("t", 0, o);
        }
        assert_eq!(t.finish("t", 0, 12), None, "10 is still running");
        assert_eq!(t.finish("t", 0, 10), Some(10));
        assert_eq!(t.finish("t", 0, 11), Some(12));
        assert_eq!(t.finish("t", 0, 13), Some(13));
    }

    #[test]
    fn partitions_are_independent_and_rewinds_reset() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 5);
        t.begin("t", 1, 9);
        assert_eq!(t.finish("t", 1, 9), Some(9));
        t.begin("t", 1, 3);
        assert_eq!(t.finish("t", 1, 3), Some(3));
        assert_eq!(t.finish("t", 0, 5), Some(5));
    }
}
