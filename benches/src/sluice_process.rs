//! A `sluice serve` child process for end-to-end runs.
//!
//! Started as the tests start theirs (`sluice_harness`): `--listen 127.0.0.1:0`, its own
//! data directory, the address from the first stdout line; then the process is ready once
//! `/_internal_/healthcheck` answers 200. Its stderr goes to `sluice.log` in
//! the data directory's parent, shown on failure. Peak RSS is `VmHWM` from
//! `/proc/<pid>/status`. Dropping the handle kills the process (the data is throwaway).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// How long a starting sluice may take to become healthy.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// The release binary, `target/release/sluice` of this workspace (or `$SLUICE_BIN`).
pub fn default_binary() -> PathBuf {
    match std::env::var_os("SLUICE_BIN").filter(|path| !path.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("release/sluice")
        }
    }
}

/// A running `sluice serve`.
pub struct SluiceProcess {
    child: Child,
    base_url: String,
    log_path: PathBuf,
}

impl SluiceProcess {
    /// Starts `binary serve` on a free port with data under `dir/data`, and `env` set.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        env: &[(&str, String)],
    ) -> Result<SluiceProcess, BenchError> {
        let log_path = dir.join("sluice.log");
        let log = std::fs::File::create(&log_path)
            .map_err(BenchError::io(format!("creating {}", log_path.display())))?;
        let mut command = sluice_harness::serve_command(binary, &dir.join("data"));
        command.stderr(Stdio::from(log));
        for (key, value) in env {
            command.env(key, value);
        }
        let spawn_binary = binary.to_path_buf();
        // Blocks until the first line, which comes right after binding.
        let (child, base_url) =
            tokio::task::spawn_blocking(move || sluice_harness::spawn_listening(command))
                .await
                .map_err(|error| BenchError::Sluice(format!("starting sluice: {error}")))?
                .map_err(BenchError::io(format!(
                    "starting {} (last log lines in {})",
                    spawn_binary.display(),
                    log_path.display()
                )))?;
        let mut process = SluiceProcess {
            child,
            base_url,
            log_path,
        };
        process.wait_healthy().await?;
        Ok(process)
    }

    async fn wait_healthy(&mut self) -> Result<(), BenchError> {
        let client = reqwest::Client::new();
        let url = format!("{}/_internal_/healthcheck", self.base_url);
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(&format!("exited with {status}")));
            }
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!("not healthy after {START_PATIENCE:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn failure(&mut self, reason: &str) -> BenchError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        BenchError::Sluice(format!("sluice serve {reason}; last log lines:\n{tail}"))
    }

    /// `http://ADDR`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far, in bytes (`VmHWM`).
    pub fn peak_rss_bytes(&self) -> Result<u64, BenchError> {
        peak_rss_bytes(self.pid())
    }

    /// CPU time (user + system, every thread) the process has used so far.
    pub fn cpu_time(&self) -> Result<Duration, BenchError> {
        cpu_time(self.pid())
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` of process `pid`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> Result<u64, BenchError> {
    sluice_harness::peak_rss_bytes(pid).map_err(BenchError::io(format!("VmHWM of {pid}")))
}

/// CPU time (user + system, summed over every thread) of process `pid` so far; `pid` 0
/// means this process.
pub fn cpu_time(pid: u32) -> Result<Duration, BenchError> {
    sluice_harness::cpu_time(pid).map_err(BenchError::io(format!("CPU time of {pid}")))
}
