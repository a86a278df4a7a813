//! The Python row: the stack (transformers + torch), run by `python_baseline.py` in the bench's own
//! virtualenv. Absent when the virtualenv is: the table then says why.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, ensure};
use serde_json::json;

use crate::{measure::Run, workload::Request};

pub struct Python {
    interpreter: PathBuf,
    script: PathBuf,
}

impl Python {
    /// The virtualenv's interpreter if it can import torch and transformers; else why not.
    pub fn find(bench_dir: &Path) -> Result<Python, String> {
        let interpreter = bench_dir.join(".venv/bin/python");
        if !interpreter.exists() {
            return Err(format!(
                "no virtualenv at {}; bench/run.sh installs it",
                interpreter.display()
            ));
        }
        let imports = Command::new(&interpreter)
            .args(["-c", "import torch, transformers"])
            .output()
            .map_err(|e| e.to_string())?;
        if !imports.status.success() {
            return Err(format!(
                "torch/transformers do not import: {}",
                String::from_utf8_lossy(&imports.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        Ok(Python {
            interpreter,
            script: bench_dir.join("python_baseline.py"),
        })
    }

    pub fn run(&self, requests: &[Request]) -> anyhow::Result<Run> {
        let mut child = Command::new(&self.interpreter)
            .arg(&self.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting python")?;
        // Each repetition's requests carry fresh seeds; torch takes one for the whole run.
        let seed = requests.first().map_or(1, |r| r.seed);
        let workload = json!({ "requests": requests, "seed": seed });
        child
            .stdin
            .take()
            .context("python's stdin")?
            .write_all(workload.to_string().as_bytes())?;
        let output = child.wait_with_output()?;
        ensure!(
            output.status.success(),
            "python_baseline.py exited with {}",
            output.status
        );
        serde_json::from_slice(&output.stdout).context("reading python_baseline.py's figures")
    }
}
