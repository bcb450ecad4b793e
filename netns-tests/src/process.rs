//! A process started inside a namespace, its output in a log file, stopped on drop.
use crate::cmd;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A running process; dropping it sends SIGTERM, then SIGKILL after a grace period.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Starts `program args...` in the network namespace `netns` with
    /// `nsenter --net=/run/netns/NAME` (network namespace only, so bpffs pins stay shared),
    /// stdout and stderr to `log`. It gets its own process group so a Ctrl-C at the terminal
    /// reaches only the driver, which then tears down in order.
    pub fn spawn(netns: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd::command_in(netns, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {} in {netns}", program.display()))?;
        Ok(Self {
            child,
            log: log.to_owned(),
            exited: None,
        })
    }

    /// The process id (nsenter execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Waits for the process to end by itself, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("process {} still running after {timeout:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (for example `libc::SIGKILL` to simulate a crash).
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        if unsafe { libc::kill(self.pid() as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Stops the process: SIGTERM (and SIGCONT, should a test have stopped it), then SIGKILL
    /// if it does not exit in time.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.signal(libc::SIGCONT)?;
        match self.wait_exit(TERM_GRACE) {
            Ok(status) => Ok(status),
            Err(_) => {
                self.signal(libc::SIGKILL)?;
                self.wait_exit(TERM_GRACE)
            }
        }
    }

    /// The last `lines` lines of the process's output, for failure reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("testbed cleanup: process {}: {e:#}", self.pid());
        }
    }
}
