//! A queue's consumers, in the order dispatch offers them messages: by consumer priority
//! (`x-priority`, highest first), round-robin within a priority, and with single active
//! consumer (`x-single-active-consumer`) only the first registered one, the others waiting
//! their turn in registration order.
//!
//! A consumer that cannot take a message (its prefetch is full, its socket congested) is
//! parked: it leaves the rotation until [`Consumers::unpark`] puts it back (an ack, a qos
//! change or a drained socket frees it). Dispatch therefore costs the same whether one or a
//! thousand consumers are blocked. The queue ([`super::Queue`]) owns this under its lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::broker::consumer::Consumer;

/// The consumers of one queue.
#[derive(Debug, Default)]
pub struct Consumers {
    /// Consumers that may have room, grouped by priority (highest first); each group is
    /// in round-robin order. No group is ever left empty (every change removes emptied
    /// ones), so an empty list means no consumer can take a message.
    groups: Vec<(i32, VecDeque<Arc<Consumer>>)>,
    /// Every consumer that may receive (in a group or parked), by identity.
    members: HashMap<usize, Arc<Consumer>>,
    /// With single active consumer: those waiting for the active one to go.
    waiting: VecDeque<Arc<Consumer>>,
    /// The queue has `x-single-active-consumer`.
    single_active: bool,
}

fn key(c: &Arc<Consumer>) -> usize {
    Arc::as_ptr(c) as usize
}

impl Consumers {
    /// An empty set; with `single_active`, only one consumer receives at a time.
    pub fn new(single_active: bool) -> Self {
        Consumers { single_active, ..Consumers::default() }
    }

    /// Consumers of the queue (receiving or waiting), as declare-ok counts them.
    pub fn len(&self) -> usize {
        self.members.len() + self.waiting.len()
    }

    /// No consumers at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No consumer could take a message now (all parked, or none).
    pub fn none_ready(&self) -> bool {
        // Read on every enqueue: the length, not the groups behind it (a cache miss).
        self.groups.is_empty()
    }

    /// Every consumer, with whether it receives (false: waiting its turn as the single
    /// active consumer).
    pub fn listed(&self) -> Vec<(Arc<Consumer>, bool)> {
        let active = self.members.values().map(|c| (Arc::clone(c), true));
        active.chain(self.waiting.iter().map(|c| (Arc::clone(c), false))).collect()
    }

    /// Every consumer, receiving or waiting.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Consumer>> {
        self.members.values().chain(self.waiting.iter())
    }

    /// Registers a consumer; with single active consumer it waits unless it is the first.
    pub fn add(&mut self, c: Arc<Consumer>) {
        if self.single_active && !self.members.is_empty() {
            self.waiting.push_back(c);
            return;
        }
        self.members.insert(key(&c), Arc::clone(&c));
        self.enter(c);
    }

    /// Puts a member into its priority group.
    fn enter(&mut self, c: Arc<Consumer>) {
        let pos = self.groups.partition_point(|(p, _)| *p > c.priority);
        match self.groups.get_mut(pos) {
            Some((p, g)) if *p == c.priority => g.push_back(c),
            _ => self.groups.insert(pos, (c.priority, VecDeque::from([c]))),
        }
    }

    /// Removes a consumer; with single active consumer the next waiting one takes over.
    pub fn remove(&mut self, c: &Arc<Consumer>) {
        if self.members.remove(&key(c)).is_some() {
            for (_, g) in &mut self.groups {
                g.retain(|x| !Arc::ptr_eq(x, c));
            }
            self.groups.retain(|(_, g)| !g.is_empty());
            if self.single_active && self.members.is_empty() {
                if let Some(next) = self.waiting.pop_front() {
                    self.members.insert(key(&next), Arc::clone(&next));
                    self.enter(next);
                }
            }
        } else {
            self.waiting.retain(|x| !Arc::ptr_eq(x, c));
        }
    }

    /// Takes every consumer out (the queue is going).
    pub fn drain(&mut self) -> Vec<Arc<Consumer>> {
        self.groups.clear();
        let mut all: Vec<Arc<Consumer>> = self.members.drain().map(|(_, c)| c).collect();
        all.extend(self.waiting.drain(..));
        all
    }

    /// Offers a message to the consumers in order: `take` delivers it to one, or says it
    /// cannot (then that consumer is parked). Returns true when one took it; it moves to
    /// the back of its group.
    pub fn offer(&mut self, mut take: impl FnMut(&Arc<Consumer>) -> bool) -> bool {
        let mut taken = false;
        let mut emptied = false;
        for (_, group) in &mut self.groups {
            // A lone consumer keeps its place (no rotation to write), or is parked.
            if group.len() == 1 {
                if group.front().is_some_and(&mut take) {
                    taken = true;
                    break;
                }
                group.clear();
                emptied = true;
                continue;
            }
            while let Some(c) = group.pop_front() {
                if take(&c) {
                    group.push_back(c);
                    taken = true;
                    break;
                }
                // Parked: it stays a member, outside the rotation.
            }
            emptied |= group.is_empty();
            if taken {
                break;
            }
        }
        if emptied {
            self.groups.retain(|(_, g)| !g.is_empty());
        }
        taken
    }

    /// Puts a parked consumer back in the rotation (no-op if it is not parked).
    pub fn unpark(&mut self, c: &Arc<Consumer>) {
        if !self.members.contains_key(&key(c)) || self.groups.iter().any(|(_, g)| g.iter().any(|x| Arc::ptr_eq(x, c))) {
            return;
        }
        self.enter(Arc::clone(c));
    }

    /// Puts every parked consumer back in the rotation.
    pub fn unpark_all(&mut self) {
        self.groups.clear();
        let members: Vec<Arc<Consumer>> = self.members.values().cloned().collect();
        for c in members {
            self.enter(c);
        }
    }
}
