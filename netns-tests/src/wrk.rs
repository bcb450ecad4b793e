//! The load generator of the end-to-end benchmark: wrk (Debian) run inside the client
//! namespace, its result parsed.
use crate::cmd;
use crate::cpu;
use anyhow::{Context, Result};
use std::net::SocketAddrV4;
use std::time::Duration;

/// One wrk run's settings.
#[derive(Clone, Debug)]
pub struct WrkRun {
    /// wrk threads.
    pub threads: u32,
    /// Open connections.
    pub connections: u32,
    /// How long to run.
    pub duration: Duration,
    /// A new connection per request (`Connection: close`), measuring connections per second.
    pub new_connection_per_request: bool,
}

/// What wrk reported.
#[derive(Clone, Debug)]
pub struct WrkResult {
    /// Requests per second.
    pub requests_per_second: f64,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) and non-2xx answers.
    pub errors: u64,
    /// CPU ticks wrk used.
    pub cpu_ticks: u64,
}

/// Runs wrk against `target` from inside `netns`.
pub fn run(netns: &str, target: SocketAddrV4, settings: &WrkRun) -> Result<WrkResult> {
    let url = format!("http://{target}/");
    let threads = format!("-t{}", settings.threads);
    let connections = format!("-c{}", settings.connections);
    let duration = format!("-d{}s", settings.duration.as_secs());
    let mut args = vec![threads.as_str(), connections.as_str(), duration.as_str()];
    if settings.new_connection_per_request {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    let before = cpu::children_ticks();
    let out = cmd::run_in(netns, "wrk", &args)?;
    let cpu_ticks = cpu::children_ticks().saturating_sub(before);
    parse(&out, cpu_ticks).with_context(|| format!("parse wrk output:\n{out}"))
}

fn parse(out: &str, cpu_ticks: u64) -> Result<WrkResult> {
    let mut result = WrkResult {
        requests_per_second: 0.0,
        requests: 0,
        errors: 0,
        cpu_ticks,
    };
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            result.requests_per_second = v.trim().parse()?;
        } else if line.contains("requests in") {
            result.requests = line
                .split_whitespace()
                .next()
                .context("requests")?
                .parse()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            result.errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            result.errors += v.trim().parse::<u64>()?;
        }
    }
    anyhow::ensure!(result.requests > 0, "no requests completed");
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 2s test @ http://10.0.0.100/\n  2 threads and 8 connections\n  \
                   12000 requests in 2.00s, 1.2MB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n\
                   Requests/sec:   5999.50\nTransfer/sec:    600KB\n";
        let r = parse(out, 7).unwrap();
        assert_eq!(r.requests, 12000);
        assert_eq!(r.errors, 6);
        assert!((r.requests_per_second - 5999.5).abs() < 1e-9);
    }
}
