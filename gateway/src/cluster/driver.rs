//! What a driver of a ring [`Node`](super::ring::Node) keeps beside it: the ring's timers and
//! the ring messages waiting for the transport's verdict. The daemon's shell and the simulator
//! both drive a node with these, so a seed exercises the bookkeeping the daemon runs
//! (`docs/architecture.md`, "The ring's shell").
use std::{collections::BTreeMap, time::Instant};

use super::{
    events::{Event, Sent},
    message::Message,
    transport::{MessageId, SendError, TransportEvent},
    types::NodeId,
};

/// The ring's timers (`Action::SetTimer`): setting a kind again replaces its deadline, as the
/// ring expects. Kinds due at the same instant fire in their order, so every run of a seed
/// fires them alike.
#[derive(Debug)]
pub struct Timers<K> {
    at: BTreeMap<K, Instant>,
}

impl<K: Copy + Ord> Default for Timers<K> {
    fn default() -> Self {
        Self {
            at: BTreeMap::new(),
        }
    }
}

impl<K: Copy + Ord> Timers<K> {
    /// Arms (or re-arms) `kind` for `at`.
    pub fn set(&mut self, kind: K, at: Instant) {
        self.at.insert(kind, at);
    }

    /// Removes and returns the kinds due at `now`, earliest first.
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let mut due: Vec<(Instant, K)> = self
            .at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, at)| (*at, *k))
            .collect();
        due.sort();
        for (_, k) in &due {
            self.at.remove(k);
        }
        due.into_iter().map(|(_, k)| k).collect()
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.values().min().copied()
    }
}

/// Ring messages handed to the transport whose delivery the ring waits to hear of
/// (`Event::Outcome`).
#[derive(Debug, Default)]
pub struct Outcomes {
    waiting: BTreeMap<(NodeId, MessageId), Sent>,
}

impl Outcomes {
    /// Hands the ring's `msg` for `to` to the transport through `send` and remembers it. A
    /// message the transport refuses is lost to the ring as one to a dead peer would be: the
    /// error comes back with the outcome the ring must be given now.
    pub fn send(
        &mut self,
        to: NodeId,
        msg: &Message,
        send: impl FnOnce(Vec<u8>) -> Result<MessageId, SendError>,
    ) -> Result<(), (SendError, Event)> {
        let Some(what) = Sent::of(msg) else {
            return Ok(());
        };
        match send(msg.encode()) {
            Ok(id) => {
                self.waiting.insert((to, id), what);
                Ok(())
            }
            Err(e) => Err((
                e,
                Event::Outcome {
                    to,
                    what,
                    delivered: false,
                },
            )),
        }
    }

    /// The ring's event for the transport's verdict on a message it remembers; `None` for
    /// other events and for messages that are not the ring's.
    pub fn settle(&mut self, event: &TransportEvent) -> Option<Event> {
        let (to, id, delivered) = match *event {
            TransportEvent::Delivered { to, id } => (to, id, true),
            TransportEvent::Unreachable { to, id } => (to, id, false),
            TransportEvent::Received { .. } => return None,
        };
        let what = self.waiting.remove(&(to, id))?;
        Some(Event::Outcome {
            to,
            what,
            delivered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::message::{Join, Probe};
    use std::time::Duration;

    #[test]
    fn timers_replace_and_fire_in_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        timers.set('a', ms(30));
        timers.set('b', ms(10));
        timers.set('a', ms(20)); // re-armed earlier
        timers.set('c', ms(50));
        timers.set('d', ms(20)); // same instant as 'a': after it
        assert_eq!(timers.next(), Some(ms(10)));
        assert_eq!(timers.due(ms(5)), []);
        assert_eq!(timers.due(ms(25)), ['b', 'a', 'd']);
        assert_eq!(timers.due(ms(25)), [], "fired timers are gone");
        assert_eq!(timers.next(), Some(ms(50)));
    }

    #[test]
    fn outcomes_reach_the_ring_once_and_a_refusal_at_once() {
        let mut outcomes = Outcomes::default();
        let probe = Message::Probe(Probe {
            origin: NodeId(0),
            permit: true,
            seq: 1,
        });
        let to = NodeId(2);
        outcomes.send(to, &probe, |_| Ok(MessageId(7))).unwrap();
        let delivered = TransportEvent::Delivered {
            to,
            id: MessageId(7),
        };
        assert!(matches!(
            outcomes.settle(&delivered),
            Some(Event::Outcome {
                what: Sent::Probe,
                delivered: true,
                ..
            })
        ));
        assert!(outcomes.settle(&delivered).is_none(), "settled once");
        let join = Message::Join(Join {
            from: NodeId(0),
            ring_size: 0,
            ring_low: None,
            config_version: 1,
        });
        let (_, event) = outcomes
            .send(to, &join, |_| Err(SendError::UnknownPeer(to)))
            .unwrap_err();
        assert!(matches!(
            event,
            Event::Outcome {
                what: Sent::Join,
                delivered: false,
                ..
            }
        ));
    }
}
