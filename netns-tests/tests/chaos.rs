//! Issue 11, "A chaos run": 120 s of random faults (host deaths, two deaths with a comeback
//! between, SIGSTOP, links down, loss, restarts on the pins, VIP moves, reloads, a CPU hog)
//! against the three-node cluster under kept-alive and new connections and a 1 ms UDP prober
//! per VIP. The seed comes from the clock, so every CI run tries other sequences; it is
//! printed with the command that replays it, and the daemons' logs are kept in
//! target/tmp/chaos/seed-S. No kept-alive connection may break and no two owners may answer
//! beyond the resolution time.
use netns_tests::chaos::{self, Options};
use std::path::Path;

#[test]
fn random_faults_break_no_kept_alive_connection_and_leave_no_two_owners() {
    let seed = chaos::clock_seed();
    println!("chaos seed {seed}");
    let options = Options {
        seconds: 120,
        seed,
        storm: false,
        logs: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos/seed-{seed}"))),
    };
    let report = chaos::run(&options).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    print!("{report}");
    assert!(
        report.passed(),
        "seed {seed}: {} kept-alive connections broke, {} dual answers beyond the resolution \
         time{}; replay: {}",
        report.load.breaks.len(),
        report.dual_answers(),
        report
            .aborted
            .as_ref()
            .map(|a| format!(", ended early: {a}"))
            .unwrap_or_default(),
        report.replay()
    );
}
