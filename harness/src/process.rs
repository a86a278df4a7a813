//! One genq process: spawned from its binary with its environment, stderr appended to its log
//! file (so a restarted process's log follows its predecessor's), stopped with SIGTERM and, past a
//! grace, SIGKILL.

use std::{
    ffi::OsStr,
    fs::OpenOptions,
    path::Path,
    process::{ExitStatus, Stdio},
};

use anyhow::Context;
use nix::{sys::signal, unistd::Pid};
use tokio::{process::Child, time::Instant};

pub struct Process {
    child: Child,
    pid: u32,
}

/// What to start: the binary (through `wrapper`'s command, if any), variables to set (later ones
/// win), and the log file.
pub struct Spawn<'a> {
    pub wrapper: &'a [String],
    pub binary: &'a Path,
    pub env: Vec<(&'a str, &'a OsStr)>,
    pub log: &'a Path,
}

impl Process {
    pub fn spawn(spec: Spawn<'_>) -> anyhow::Result<Process> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let mut command = match spec.wrapper {
            [] => tokio::process::Command::new(spec.binary),
            [program, args @ ..] => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).arg(spec.binary);
                command
            }
        };
        // No genq setting is inherited from the caller's shell: a GENQ_SLOTS exported there would
        // silently change what a benchmark measures. Only `spec.env` configures the process.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GENQ_") {
                command.env_remove(name);
            }
        }
        command
            .envs(spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // The drop guard: a caller that fails half-way drops its `Cluster`, and every process
            // still running gets SIGKILL. A process already waited for is not signalled again.
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| {
            format!("starting {} (built with --release?)", spec.binary.display())
        })?;
        // A spawned child has a pid until it is waited for, and we have not waited yet.
        let pid = child.id().context("a just-spawned child has a pid")?;
        Ok(Process { child, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks the process to stop, as an orchestrator does. The pid is still this child's: it is
    /// only released when we wait for the child, and a child already waited for is skipped.
    pub fn terminate(&mut self) {
        if self.exited().is_none() {
            let _ = signal::kill(Pid::from_raw(self.pid as i32), signal::Signal::SIGTERM);
        }
    }

    /// Waits for the process to exit until `deadline`, then SIGKILLs it.
    pub async fn wait_or_kill(&mut self, deadline: Instant) {
        if tokio::time::timeout_at(deadline, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
