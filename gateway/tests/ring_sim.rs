//! Seeded scenarios of the ring in the deterministic simulator (`gateway::cluster::sim`):
//! `SIM_SEEDS=N` runs seeds 0..N (default 10,000) on every CPU, `SIM_SEED=S` replays one;
//! a failure prints the command that replays it with a trace. `cargo xtask test` runs this
//! in release.
use std::{
    panic,
    sync::atomic::{AtomicU64, Ordering},
    thread,
};

use gateway::cluster::sim::{Scenario, Sim};

fn passes(seed: u64) -> bool {
    panic::catch_unwind(|| Sim::new(Scenario::from_seed(seed), false).run()).is_ok()
}

#[test]
fn seeded_scenarios_keep_the_invariants() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.parse().expect("SIM_SEED is a number");
        assert!(passes(seed), "replay: cargo xtask sim --seed {seed}");
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let next = AtomicU64::new(0);
    let failed: Vec<u64> = thread::scope(|scope| {
        let workers: Vec<_> = (0..thread::available_parallelism().map_or(1, |n| n.get()))
            .map(|_| {
                scope.spawn(|| {
                    let mut failed = Vec::new();
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= seeds {
                            return failed;
                        }
                        if !passes(seed) {
                            failed.push(seed);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker"))
            .collect()
    });
    println!("{seeds} scenarios, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "failed seeds {failed:?}; replay one: cargo xtask sim --seed {}",
        failed[0]
    );
}
