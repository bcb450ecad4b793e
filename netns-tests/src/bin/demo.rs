//! The demo: the testbed, the gateway daemon with a generated config, a few hundred HTTP
//! requests through the VIP from several client addresses, who served them, and the XDP
//! counters. Everything is torn down on success, failure and Ctrl-C.
use anyhow::{bail, Result};
use netns_tests::client::{run_requests, Tally};
use netns_tests::daemon::ServiceConfig;
use netns_tests::scenario::Scenario;
use netns_tests::topology::{self, VIP};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Set by SIGINT; checked between steps so the teardown runs in order.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

const REQUESTS: usize = 300;
const BATCH: usize = 50;

fn main() -> ExitCode {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    match demo() {
        Ok(()) => {
            println!("\ntestbed torn down; demo done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}\ntestbed torn down");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<()> {
    println!("building the testbed: client - router - [ext] - gateway - [int] - 3 back-ends");
    let s = Scenario::start(vec![ServiceConfig::web(&[1, 2, 1]), ServiceConfig::echo()])?;
    check_interrupted()?;
    println!("\n$ gateway status\n{}", s.daemon.cli(&["status"])?);
    let clients = topology::client_addrs();
    println!(
        "sending {REQUESTS} HTTP requests to {} from {} to {} (one connection each)",
        s.web(),
        clients[0],
        clients[clients.len() - 1]
    );
    let started = Instant::now();
    let mut tally = Tally::default();
    for _ in 0..REQUESTS / BATCH {
        check_interrupted()?;
        tally.merge(run_requests(s.client(), &clients, s.web(), BATCH, 2)?);
    }
    let took = started.elapsed();
    println!("\n{:<12} {:>8}   (weights 1:2:1)", "backend", "requests");
    for (backend, n) in &tally.by_backend {
        println!("{backend:<12} {n:>8}");
    }
    println!("{:<12} {:>8}", "failed", tally.failures);
    println!(
        "{} requests in {took:.2?} through VIP {VIP}",
        tally.successes()
    );
    check_interrupted()?;
    println!("\n$ gateway services\n{}", s.daemon.cli(&["services"])?);
    println!("$ gateway stats\n{}", s.daemon.cli(&["stats"])?);
    if tally.failures > 0 {
        bail!("{} requests failed: {:?}", tally.failures, tally.errors);
    }
    Ok(())
}
