//! What a chaos run found: per fault, the longest UDP outage per VIP, the kept-alive
//! connections that broke, the new connections that failed and the moments of two answering
//! owners, each attributed to the fault whose window (from its start to the next fault's) it
//! fell into; the totals; the result rows; and whether the run met its targets.
use super::faults::FaultRecord;
use super::load::{Failure, LoadReport};
use super::storm::{per_1000, StormReport};
use super::Options;
use crate::arp::{dual_runs, Heard};
use crate::cluster_topology::{EXTERNAL_VIPS, NODES};
use crate::failover::Prober;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Split-brain resolution time (docs/architecture.md, "Split brain"): two answering owners
/// for longer than this is a failure whatever the fault.
pub const RESOLUTION: Duration = Duration::from_secs(1);
/// The ARP watch's asking interval, the width of its buckets.
const ARP_BUCKET: Duration = Duration::from_millis(10);
/// The failover target: no VIP's service may be out longer after any fault.
pub const FAILOVER_TARGET: Duration = Duration::from_millis(300);
/// Failures listed per fault (the rest are counted).
const LISTED: usize = 8;
/// UDP outages at least this long are listed with when they began.
const LONG_GAP: Duration = FAILOVER_TARGET;

/// The run's clock: times as seconds since the run began and as UTC wall-clock time, which is
/// what the daemons' logs carry.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
    wall: SystemTime,
}

impl Clock {
    /// A clock that starts now.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Seconds from the start to `at`.
    pub fn offset(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64()
    }

    /// `at` as UTC time of day, `HH:MM:SS.mmm`.
    pub fn wall(&self, at: Instant) -> String {
        let since = (self.wall + at.saturating_duration_since(self.started))
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, ms) = (since.as_secs() % 86_400, since.subsec_millis());
        format!(
            "{:02}:{:02}:{:02}.{ms:03}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }

    /// `[+12.345 s 07:31:02.118Z]`, how progress lines begin.
    pub fn stamp(&self, at: Instant) -> String {
        format!("[+{:8.3} s {}Z]", self.offset(at), self.wall(at))
    }
}

/// One fault with what broke in its window.
#[derive(Clone, Debug)]
pub struct FaultFinding {
    /// The fault.
    pub fault: FaultRecord,
    /// Where its window ends (the next fault's start, or the end of the run).
    pub until: Instant,
    /// The longest UDP outage per external VIP in the window, with when it began.
    pub gaps: Vec<(Ipv4Addr, Duration, Option<Instant>)>,
    /// Kept-alive connections that broke in the window.
    pub breaks: Vec<Failure>,
    /// New connections that failed in the window.
    pub new_failures: Vec<Failure>,
    /// Per external VIP: the longest stretch of two answering owners in the window, and the
    /// answers heard beyond the resolution time.
    pub duals: Vec<(Ipv4Addr, Duration, usize)>,
}

impl FaultFinding {
    /// The longest outage of any VIP in the window.
    pub fn worst_gap(&self) -> Duration {
        self.gaps.iter().map(|g| g.1).max().unwrap_or_default()
    }
}

/// The run's findings.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The fault phase's length asked for.
    pub seconds: u64,
    /// The run's clock.
    pub clock: Clock,
    /// Each fault with its findings.
    pub findings: Vec<FaultFinding>,
    /// What the load saw in all.
    pub load: LoadReport,
    /// The storm, if one ran.
    pub storm: Option<StormReport>,
    /// Where the daemons' logs were kept.
    pub logs: Option<String>,
    /// Why the faults ended early (the cluster did not settle), if they did.
    pub aborted: Option<String>,
    /// Each node's non-zero XDP drop counters by reason at the end of the faults (they count
    /// from the node's datapath's creation: its pins outlive its daemon's restarts).
    pub drops: Vec<(&'static str, Vec<(String, u64)>)>,
}

impl Report {
    /// Attributes what the load, the probers and the ARP watch saw to the faults' windows;
    /// the run ended at `ended`.
    pub fn build(
        options: &Options,
        clock: Clock,
        faults: Vec<FaultRecord>,
        ended: Instant,
        load: LoadReport,
        probers: &[Prober],
        heard: &[Heard],
    ) -> Self {
        let runs: Vec<(Ipv4Addr, Vec<crate::arp::DualRun>)> = EXTERNAL_VIPS
            .iter()
            .map(|&vip| (vip, dual_runs(heard, vip, ARP_BUCKET)))
            .collect();
        let ends: Vec<Instant> = faults
            .iter()
            .skip(1)
            .map(|f| f.started)
            .chain([ended])
            .collect();
        let findings = faults
            .into_iter()
            .zip(ends)
            .map(|(fault, until)| {
                let inside = |at: Instant| at >= fault.started && at < until;
                FaultFinding {
                    gaps: probers
                        .iter()
                        .map(|p| {
                            let outage = p.longest_outage(fault.started, until);
                            let gap = outage.map_or(Duration::ZERO, |(_, gap)| gap);
                            (*p.target().ip(), gap, outage.map(|(began, _)| began))
                        })
                        .collect(),
                    breaks: load
                        .breaks
                        .iter()
                        .filter(|b| inside(b.at))
                        .cloned()
                        .collect(),
                    new_failures: load
                        .new_failures
                        .iter()
                        .filter(|f| inside(f.at))
                        .cloned()
                        .collect(),
                    duals: runs
                        .iter()
                        .map(|(vip, runs)| {
                            let here: Vec<_> = runs.iter().filter(|r| inside(r.start)).collect();
                            let longest = here.iter().map(|r| r.length()).max();
                            let beyond = here.iter().map(|r| r.answers_beyond(RESOLUTION)).sum();
                            (*vip, longest.unwrap_or_default(), beyond)
                        })
                        .collect(),
                    fault,
                    until,
                }
            })
            .collect();
        Self {
            seed: options.seed,
            seconds: options.seconds,
            clock,
            findings,
            load,
            storm: None,
            logs: None,
            aborted: None,
            drops: Vec::new(),
        }
    }

    /// Broken kept-alive connections per 1,000 opened.
    pub fn broken_per_1000(&self) -> f64 {
        per_1000(self.load.breaks.len() as u64, self.load.kept_opened)
    }

    /// Failed new connections per 1,000 tried.
    pub fn new_failed_per_1000(&self) -> f64 {
        per_1000(self.load.new_failures.len() as u64, self.load.new_total())
    }

    /// ARP answers heard while two owners answered, beyond the resolution time.
    pub fn dual_answers(&self) -> usize {
        self.findings
            .iter()
            .flat_map(|f| f.duals.iter().map(|d| d.2))
            .sum()
    }

    /// The longest outage after any fault (the run's failover maximum), and its fault.
    pub fn failover_max(&self) -> (Duration, Option<&FaultFinding>) {
        let worst = self.findings.iter().max_by_key(|f| f.worst_gap());
        (
            worst.map(FaultFinding::worst_gap).unwrap_or_default(),
            worst,
        )
    }

    /// Whether the run met the targets that fail it: no kept-alive connection broke, no two
    /// owners answered beyond the resolution time, and the cluster settled after every fault.
    pub fn passed(&self) -> bool {
        self.load.breaks.is_empty() && self.dual_answers() == 0 && self.aborted.is_none()
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        format!(
            "cargo xtask chaos --seconds {} --seed {}{}",
            self.seconds,
            self.seed,
            if self.storm.is_some() { " --storm" } else { "" }
        )
    }

    /// The result rows `{"name","value","unit"}`, as `cargo xtask bench` merges them.
    pub fn rows(&self) -> Vec<Value> {
        let mut rows = vec![
            json!({"name": "chaos_broken_per_1000/gateway", "value": self.broken_per_1000(), "unit": "per_1000"}),
            json!({"name": "chaos_new_failed_per_1000/gateway", "value": self.new_failed_per_1000(), "unit": "per_1000"}),
            json!({"name": "chaos_dual_answers/gateway", "value": self.dual_answers(), "unit": "answers"}),
            json!({"name": "chaos_failover_ms_max/gateway", "value": ms(self.failover_max().0), "unit": "ms"}),
        ];
        if let Some(storm) = &self.storm {
            rows.push(json!({"name": "broken_per_1000/new_conn_storm/gateway", "value": storm.failed_per_1000(), "unit": "per_1000"}));
        }
        rows
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clock = &self.clock;
        writeln!(f, "\n=== chaos report, seed {} ===", self.seed)?;
        for (n, finding) in self.findings.iter().enumerate() {
            let fault = &finding.fault;
            writeln!(
                f,
                "\n#{n} {} [{}] at +{:.3} s ({}Z), window {:.1} s{}",
                fault.kind.name(),
                fault.node_names(),
                clock.offset(fault.started),
                clock.wall(fault.started),
                finding.until.duration_since(fault.started).as_secs_f64(),
                fault
                    .error
                    .as_ref()
                    .map(|e| format!(", NOT DONE: {e}"))
                    .unwrap_or_default()
            )?;
            for (at, step) in &fault.steps {
                writeln!(
                    f,
                    "    +{:6.3} s {}Z  {step}",
                    at.duration_since(fault.started).as_secs_f64(),
                    clock.wall(*at)
                )?;
            }
            let gaps: Vec<String> = finding
                .gaps
                .iter()
                .map(|(vip, gap, began)| match began {
                    // When a long one began, to find it in the logs and captures.
                    Some(began) if *gap >= LONG_GAP => {
                        format!("{vip} {:.0} ms from {}Z", ms(*gap), clock.wall(*began))
                    }
                    _ => format!("{vip} {:.0} ms", ms(*gap)),
                })
                .collect();
            writeln!(f, "    longest UDP gap: {}", gaps.join(", "))?;
            for (vip, longest, beyond) in finding.duals.iter().filter(|d| !d.1.is_zero()) {
                writeln!(
                    f,
                    "    two owners answered for {vip}: longest {longest:?}, {beyond} answers beyond {RESOLUTION:?}"
                )?;
            }
            writeln!(
                f,
                "    kept-alive broken: {}, new connections failed: {}",
                finding.breaks.len(),
                finding.new_failures.len()
            )?;
            let listed = [
                ("broken", &finding.breaks),
                ("new failed", &finding.new_failures),
            ];
            for (what, failures) in listed {
                for x in failures.iter().take(LISTED) {
                    writeln!(
                        f,
                        "      {what} +{:.3} s {}Z {} from {}: {}",
                        x.at.duration_since(fault.started).as_secs_f64(),
                        clock.wall(x.at),
                        x.vip,
                        x.src,
                        x.error
                    )?;
                }
            }
        }
        if let Some(storm) = &self.storm {
            writeln!(
                f,
                "\nstorm through {}: {} opened, {} failed ({:.2} per 1000) across the death of {} at {}Z",
                storm.vip,
                storm.opened,
                storm.failures.len(),
                storm.failed_per_1000(),
                NODES[storm.killed],
                clock.wall(storm.died)
            )?;
            for s in storm.failures.iter().take(LISTED * 2) {
                let before = storm.died.checked_duration_since(s.opened);
                let relative = match before {
                    Some(d) => format!("opened {:.0} ms before the death", ms(d)),
                    None => format!(
                        "opened {:.0} ms after the death",
                        ms(s.opened.duration_since(storm.died))
                    ),
                };
                writeln!(f, "      {} at {}: {relative}: {}", s.src, s.phase, s.error)?;
            }
        }
        let first = self.findings.first().map(|f| f.fault.started);
        let early = |at: Instant| first.is_none_or(|first| at < first);
        let (breaks, failed) = (
            self.load.breaks.iter().filter(|b| early(b.at)).count(),
            self.load
                .new_failures
                .iter()
                .filter(|n| early(n.at))
                .count(),
        );
        if breaks + failed > 0 {
            writeln!(
                f,
                "
before the first fault: {breaks} kept-alive broken, {failed} new connections failed"
            )?;
        }
        let (failover, worst) = self.failover_max();
        let mut totals = String::new();
        let _ = writeln!(
            totals,
            "kept-alive: {} opened, {} requests answered, {} broken ({:.2} per 1000)",
            self.load.kept_opened,
            self.load.kept_requests,
            self.load.breaks.len(),
            self.broken_per_1000()
        );
        let _ = writeln!(
            totals,
            "new connections: {} tried, {} failed ({:.2} per 1000)",
            self.load.new_total(),
            self.load.new_failures.len(),
            self.new_failed_per_1000()
        );
        let _ = writeln!(
            totals,
            "dual ARP answers beyond {RESOLUTION:?}: {}",
            self.dual_answers()
        );
        let _ = writeln!(
            totals,
            "failover max: {:.0} ms{} (target under {:.0} ms)",
            ms(failover),
            worst
                .map(|w| format!(" ({} [{}])", w.fault.kind.name(), w.fault.node_names()))
                .unwrap_or_default(),
            ms(FAILOVER_TARGET)
        );
        writeln!(f, "\ntotals:\n{totals}")?;
        for row in self.rows() {
            writeln!(
                f,
                "  {:<42} {:>10.2} {}",
                row["name"].as_str().unwrap_or_default(),
                row["value"].as_f64().unwrap_or(0.0),
                row["unit"].as_str().unwrap_or_default()
            )?;
        }
        for (node, reasons) in &self.drops {
            let each: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
            writeln!(f, "XDP drops on {node}: {}", each.join(", "))?;
        }
        if let Some(why) = &self.aborted {
            writeln!(f, "the faults ended early: {why}")?;
        }
        if let Some(logs) = &self.logs {
            writeln!(f, "daemon logs: {logs}")?;
        }
        writeln!(
            f,
            "\n{} (seed {}); replay: {}",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.seed,
            self.replay()
        )
    }
}
