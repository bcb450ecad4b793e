//! CPU accounting of a benchmark run from /proc: the whole machine (busy, softirq, where XDP
//! and the kernel's forwarding run) and chosen processes, to say what limited a run.
use anyhow::{Context, Result};
use std::time::Instant;

/// Clock ticks per second of /proc times (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// The machine's CPU time counters (/proc/stat, all CPUs), in ticks.
#[derive(Clone, Copy, Debug, Default)]
struct MachineTicks {
    busy: u64,
    softirq: u64,
    total: u64,
}

fn machine_ticks() -> Result<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok(MachineTicks {
        busy: total - idle,
        softirq: v.get(6).copied().unwrap_or(0),
        total,
    })
}

/// User plus system ticks of a process (children not included).
fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    utime + stime
}

/// A running measurement.
pub struct CpuMeter {
    started: Instant,
    machine: MachineTicks,
    processes: Vec<(String, u32, u64)>,
}

/// The CPU use over a measurement.
#[derive(Clone, Debug)]
pub struct CpuUse {
    /// Busy share of all CPUs, percent.
    pub machine_busy: f64,
    /// Softirq share of all CPUs, percent (XDP, bridges, the kernel's forwarding and NAT).
    pub softirq: f64,
    /// Per process: name and percent of one CPU.
    pub processes: Vec<(String, f64)>,
}

impl CpuMeter {
    /// Starts measuring the machine and the named processes.
    pub fn start(processes: &[(String, u32)]) -> Result<Self> {
        Ok(Self {
            started: Instant::now(),
            machine: machine_ticks()?,
            processes: processes
                .iter()
                .map(|(name, pid)| (name.clone(), *pid, process_ticks(*pid)))
                .collect(),
        })
    }

    /// Ends the measurement. `extra` are processes that ran only inside it (their whole
    /// lifetime counts), such as the load generator.
    pub fn finish(self, extra: &[(String, u64)]) -> Result<CpuUse> {
        let seconds = self.started.elapsed().as_secs_f64();
        let now = machine_ticks()?;
        let total = (now.total - self.machine.total).max(1) as f64;
        let hz = ticks_per_second();
        let mut processes: Vec<(String, f64)> = self
            .processes
            .iter()
            .map(|(name, pid, before)| {
                let used = process_ticks(*pid).saturating_sub(*before) as f64;
                (name.clone(), used / hz / seconds * 100.0)
            })
            .collect();
        processes.extend(
            extra
                .iter()
                .map(|(name, ticks)| (name.clone(), *ticks as f64 / hz / seconds * 100.0)),
        );
        Ok(CpuUse {
            machine_busy: (now.busy - self.machine.busy) as f64 / total * 100.0,
            softirq: (now.softirq - self.machine.softirq) as f64 / total * 100.0,
            processes,
        })
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "machine {:.0}% busy ({:.0}% softirq) of {} CPUs;",
            self.machine_busy,
            self.softirq,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )?;
        for (name, pct) in &self.processes {
            write!(f, " {name} {pct:.0}%")?;
        }
        Ok(())
    }
}

/// User plus system ticks of a finished child, from `getrusage(RUSAGE_CHILDREN)` deltas.
pub fn children_ticks() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the valid pointer.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (micros(usage.ru_utime) + micros(usage.ru_stime)) * ticks_per_second() as u64 / 1_000_000
}
