//! Seeded scenarios of the ring in the deterministic simulator (`gateway::cluster::sim`):
//! `SIM_SEEDS=N` runs seeds 0..N (default 10,000) of the random family and N/40 of each
//! fault-sequence family on every CPU; `SIM_SEED=S` replays one (of `SIM_FAMILY=name`, random
//! unless given); a failure prints the command that replays it with a trace. `cargo xtask test`
//! runs this in release.
use std::{
    panic,
    sync::atomic::{AtomicU64, Ordering},
    thread,
};

use gateway::cluster::sim::{Family, Scenario, Sim};

fn passes(family: Family, seed: u64) -> bool {
    panic::catch_unwind(|| Sim::new(Scenario::of(family, seed), false).run()).is_ok()
}

/// The command that replays `seed` of `family` with a trace.
fn replay(family: Family, seed: u64) -> String {
    format!("cargo xtask sim --family {} --seed {seed}", family.name())
}

#[test]
fn seeded_scenarios_keep_the_invariants() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.parse().expect("SIM_SEED is a number");
        let family = std::env::var("SIM_FAMILY").map_or(Family::Random, |name| {
            Family::from_name(&name).expect("SIM_FAMILY names a family")
        });
        assert!(passes(family, seed), "replay: {}", replay(family, seed));
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let runs: Vec<(Family, u64)> = Family::ALL
        .into_iter()
        .flat_map(|f| {
            let n = if f == Family::Random {
                seeds
            } else {
                (seeds / 40).max(1)
            };
            (0..n).map(move |s| (f, s))
        })
        .collect();
    let next = AtomicU64::new(0);
    let failed: Vec<(Family, u64)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..thread::available_parallelism().map_or(1, |n| n.get()))
            .map(|_| {
                scope.spawn(|| {
                    let mut failed = Vec::new();
                    loop {
                        let run = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(&(family, seed)) = runs.get(run) else {
                            return failed;
                        };
                        if !passes(family, seed) {
                            failed.push((family, seed));
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
    println!("{} scenarios, {} failed", runs.len(), failed.len());
    assert!(
        failed.is_empty(),
        "failed seeds {failed:?}; replay one: {}",
        replay(failed[0].0, failed[0].1)
    );
}
