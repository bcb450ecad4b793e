//! A CPU hog: busy threads pinned to one CPU, with a process's threads pinned beside them, so
//! a test can show what another job on the same CPU does to a daemon.
use anyhow::{Context, Result};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

/// Busy threads on one CPU until dropped.
pub struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Pins the calling thread, or the thread `tid`, to `cpus`.
fn pin(tid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ok == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Pins every thread of process `pid` to `cpus` (threads it starts later inherit it from the
/// thread that starts them).
fn pin_threads(pid: u32, cpus: &[usize]) -> Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing the threads of {pid}"))?;
    for task in tasks {
        let tid: libc::pid_t = task?.file_name().to_string_lossy().parse()?;
        pin(tid, cpus)
            .with_context(|| format!("pinning thread {tid} of {pid} to CPUs {cpus:?}"))?;
    }
    Ok(())
}

/// Pins every thread of process `pid` to `cpu`.
pub fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    pin_threads(pid, &[cpu])
}

/// Lets every thread of process `pid` run on every online CPU again, as before
/// [`pin_process`] (a chaos run hogs one daemon for a while and then goes on with it).
pub fn unpin_process(pid: u32) -> Result<()> {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    pin_threads(pid, &(0..online).collect::<Vec<_>>())
}

impl CpuHog {
    /// Starts `threads` busy threads at ordinary priority, each pinned to `cpu`.
    pub fn start(cpu: usize, threads: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|i| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("hog-{i}"))
                    .spawn(move || {
                        pin(0, &[cpu]).expect("pinning a hog thread");
                        let mut x = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                        }
                    })
                    .context("starting a hog thread")
            })
            .collect::<Result<_>>()?;
        Ok(Self { stop, threads })
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
