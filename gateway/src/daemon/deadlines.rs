//! The CLI commands waiting for the ring to carry them out (answered by id, or with a timeout),
//! kept apart from the shell's I/O so they can be tested with a made-up clock. The ring's own
//! timers are `cluster::driver::Timers`.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::control::server::Answer;

/// CLI commands handed to the ring and not answered yet.
#[derive(Debug)]
pub struct Pending {
    timeout: Duration,
    next_id: u64,
    /// Each command's answer, deadline and what it was (answers that fail name it).
    waiting: HashMap<u64, (Answer, Instant, String)>,
}

impl Pending {
    /// Commands not carried out within `timeout` are answered with a timeout error.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            next_id: 1,
            waiting: HashMap::new(),
        }
    }

    /// Registers command `what` given to the ring at `now`; returns the id the ring answers
    /// to.
    pub fn add(&mut self, now: Instant, answer: Answer, what: String) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.insert(id, (answer, now + self.timeout, what));
        id
    }

    /// The ring answered command `id` (an id not waiting, e.g. timed out already, is ignored);
    /// a failure names the command.
    pub fn finish(&mut self, id: u64, result: Result<(), String>) {
        if let Some((answer, what)) = self.waiting.remove(&id).map(|(a, _, w)| (a, w)) {
            // The CLI may have given up and closed its socket: nobody to tell.
            let _ = answer.send(result.map_err(|e| format!("{what}: {e}")));
        }
    }

    /// Takes command `id`'s answer out, for an answer that must wait for more work.
    pub fn take(&mut self, id: u64) -> Option<Answer> {
        self.waiting.remove(&id).map(|(answer, ..)| answer)
    }

    /// Answers every command whose time ran out by `now` with a timeout error.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let message = format!(
                "timed out: the cluster did not carry the command out within {:?}",
                self.timeout
            );
            self.finish(id, Err(message));
        }
    }

    /// The earliest timeout of a waiting command.
    pub fn next(&self) -> Option<Instant> {
        self.waiting.values().map(|(_, d, _)| *d).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn commands_are_answered_once_by_id_or_by_timeout() {
        let t0 = Instant::now();
        let mut pending = Pending::new(Duration::from_secs(10));
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let first = pending.add(t0, tx1, "vip move 10.0.0.100 gw2".into());
        let second = pending.add(t0 + Duration::from_secs(1), tx2, "node open gw3".into());
        assert_ne!(first, second);
        assert_eq!(pending.next(), Some(t0 + Duration::from_secs(10)));

        pending.finish(second, Ok(()));
        assert_eq!(rx2.try_recv().unwrap(), Ok(()));
        pending.finish(second, Err("late".into())); // ignored

        pending.expire(t0 + Duration::from_secs(9));
        assert!(rx1.try_recv().is_err(), "not yet");
        pending.expire(t0 + Duration::from_secs(10));
        let answer = rx1.try_recv().unwrap().unwrap_err();
        assert!(
            answer.starts_with("vip move 10.0.0.100 gw2: timed out"),
            "a failure names its command: {answer}"
        );
        assert_eq!(pending.next(), None);
        pending.finish(first, Ok(())); // the ring's late answer changes nothing
    }
}
