//! A queue's ready messages in delivery order: one FIFO, or one FIFO per priority for a
//! priority queue (`x-max-priority`), highest priority first.
//!
//! Within a priority, messages stay in offset order, so a requeued message goes back to
//! its original place. The queue ([`super::Queue`]) owns the list under its lock and asks it
//! only for the next message, an insertion, or the removal of one offset (a per-message TTL
//! that fires before its message reaches the head).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::broker::message::Message;

/// What a queue knows about a message besides its content; it travels with the message
/// through delivery and back on requeue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// It has been delivered before.
    pub redelivered: bool,
    /// Its priority band (the message's priority capped by the queue's maximum; 0 in a
    /// queue without priorities).
    pub priority: u8,
    /// Body octets, for `x-max-length-bytes` (known even while the content is paged out).
    pub body_len: u32,
    /// When it expires, in milliseconds since the Unix epoch; [`NEVER`] without a TTL.
    pub expires: u64,
    /// Times it was returned to the queue (a quorum queue's delivery count).
    pub returns: u32,
}

/// `EntryMeta::expires` of a message that does not expire.
pub const NEVER: u64 = u64::MAX;

/// A ready (not yet delivered) message.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Its position in the queue, kept across redeliveries.
    pub offset: u64,
    /// The message, or None while its content is only in the store (paged out).
    pub msg: Option<Arc<Message>>,
    /// What the queue knows about it.
    pub meta: EntryMeta,
}

/// The ready messages of one queue.
#[derive(Debug, Default)]
pub struct ReadyList {
    /// FIFOs by priority band; one band for a queue without priorities.
    bands: Vec<VecDeque<Ready>>,
    /// Messages over all bands.
    len: usize,
    /// Body octets over all bands.
    bytes: u64,
}

impl ReadyList {
    /// A list with `bands` priority bands (1 for a plain queue).
    pub fn new(bands: usize) -> Self {
        ReadyList { bands: (0..bands.max(1)).map(|_| VecDeque::new()).collect(), len: 0, bytes: 0 }
    }

    /// Ready messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No ready messages.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Body octets of the ready messages.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The band a priority falls in.
    fn band(&self, priority: u8) -> usize {
        usize::from(priority).min(self.bands.len() - 1)
    }

    /// The highest non-empty band.
    fn head_band(&self) -> Option<usize> {
        self.bands.iter().rposition(|b| !b.is_empty())
    }

    /// The message that would be delivered next.
    pub fn front(&self) -> Option<&Ready> {
        self.head_band().and_then(|b| self.bands[b].front())
    }

    /// The next message, mutably (to keep content read back from the store).
    pub fn front_mut(&mut self) -> Option<&mut Ready> {
        let b = self.head_band()?;
        self.bands[b].front_mut()
    }

    /// Takes the message that would be delivered next.
    pub fn pop_front(&mut self) -> Option<Ready> {
        let b = self.head_band()?;
        let r = self.bands[b].pop_front()?;
        self.taken(&r);
        Some(r)
    }

    /// Puts a message back in front of its band (one that could not be read yet).
    pub fn push_front(&mut self, r: Ready) {
        let b = self.band(r.meta.priority);
        self.added(&r);
        self.bands[b].push_front(r);
    }

    /// Inserts a message at its offset's place in its band (at the back for a new one).
    pub fn insert(&mut self, r: Ready) {
        let b = self.band(r.meta.priority);
        self.added(&r);
        let band = &mut self.bands[b];
        match band.back() {
            Some(last) if last.offset > r.offset => {
                let pos = band.partition_point(|x| x.offset < r.offset);
                band.insert(pos, r);
            }
            _ => band.push_back(r),
        }
    }

    /// Removes the message at `offset` in band `priority`, if it is still ready.
    pub fn remove(&mut self, priority: u8, offset: u64) -> Option<Ready> {
        let b = self.band(priority);
        let band = &mut self.bands[b];
        let pos = band.binary_search_by_key(&offset, |x| x.offset).ok()?;
        let r = band.remove(pos)?;
        self.taken(&r);
        Some(r)
    }

    /// Takes, from the front of each band, the messages whose `expires` is at or before
    /// `now` (a queue TTL keeps each band in expiry order).
    pub fn take_expired_heads(&mut self, now: u64, out: &mut Vec<Ready>) {
        for b in 0..self.bands.len() {
            while self.bands[b].front().is_some_and(|r| r.meta.expires <= now) {
                if let Some(r) = self.bands[b].pop_front() {
                    self.taken(&r);
                    out.push(r);
                }
            }
        }
    }

    /// The earliest `expires` among the band heads.
    pub fn earliest_head_expiry(&self) -> u64 {
        self.bands.iter().filter_map(|b| b.front()).map(|r| r.meta.expires).min().unwrap_or(NEVER)
    }

    /// Takes the whole list at once, leaving an empty one with the same bands (O(1): a
    /// purge of a long backlog costs the queue's lock nothing).
    pub fn take(&mut self) -> ReadyList {
        let empty = ReadyList::new(self.bands.len());
        std::mem::replace(self, empty)
    }

    /// Consumes the list, visiting every message.
    pub fn into_each(self, mut f: impl FnMut(Ready)) {
        for band in self.bands {
            band.into_iter().for_each(&mut f);
        }
    }

    /// The messages in delivery order (highest band first, each band oldest first).
    pub fn iter(&self) -> impl Iterator<Item = &Ready> {
        self.bands.iter().rev().flatten()
    }

    /// Visits every message (to rebuild the deadline index).
    pub fn for_each(&self, mut f: impl FnMut(&Ready)) {
        self.bands.iter().flatten().for_each(&mut f);
    }

    /// Reserves room for `n` more messages in band `priority` (recovery).
    pub fn reserve(&mut self, priority: u8, n: usize) {
        let b = self.band(priority);
        self.bands[b].reserve(n);
    }

    fn added(&mut self, r: &Ready) {
        self.len += 1;
        self.bytes += u64::from(r.meta.body_len);
    }

    fn taken(&mut self, r: &Ready) {
        self.len -= 1;
        self.bytes -= u64::from(r.meta.body_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, priority: u8) -> Ready {
        Ready { offset, msg: None, meta: EntryMeta { redelivered: false, priority, body_len: 10, expires: NEVER, returns: 0 } }
    }

    #[test]
    fn highest_priority_first_and_fifo_within_a_priority() {
        let mut l = ReadyList::new(4);
        for (o, p) in [(0, 1), (1, 3), (2, 1), (3, 9), (4, 0)] {
            l.insert(entry(o, p));
        }
        assert_eq!(l.len(), 5);
        assert_eq!(l.bytes(), 50);
        let order: Vec<u64> = std::iter::from_fn(|| l.pop_front().map(|r| r.offset)).collect();
        // Priority 9 counts as the maximum, 3.
        assert_eq!(order, vec![1, 3, 0, 2, 4]);
        assert!(l.is_empty());
    }

    #[test]
    fn requeue_returns_to_the_original_place_and_remove_finds_offsets() {
        let mut l = ReadyList::new(1);
        for o in [0, 1, 3] {
            l.insert(entry(o, 0));
        }
        l.insert(entry(2, 0));
        assert!(l.remove(0, 1).is_some());
        assert!(l.remove(0, 1).is_none());
        let mut order = Vec::new();
        l.take().into_each(|r| order.push(r.offset));
        assert_eq!(order, vec![0, 2, 3]);
        assert_eq!(l.len(), 0);
    }
}
