//! A `sluice serve` child process for end-to-end runs.
//!
//! Started with `--listen 127.0.0.1:0` and its own data directory; the address comes
//! from the first stdout line (`sluice listening on http://ADDR`), then the process is
//! ready once `/_internal_/healthcheck` answers 200. Its stderr goes to `sluice.log` in
//! the data directory's parent, shown on failure. Peak RSS is `VmHWM` from
//! `/proc/<pid>/status`. Dropping the handle kills the process (the data is throwaway).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("SLUICE_NATS_URL")
            .env_remove("SLUICE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .map_err(BenchError::io(format!("starting {}", binary.display())))?;
        let stdout = child.stdout.take();
        // The first line comes right after binding; a process that dies first closes
        // stdout, which ends the read.
        let first_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            if let Some(stdout) = stdout {
                let _ = BufReader::new(stdout).read_line(&mut line);
            }
            line
        })
        .await
        .unwrap_or_default();
        let mut process = SluiceProcess {
            child,
            base_url: String::new(),
            log_path,
        };
        let Some(addr) = first_line.trim().strip_prefix("sluice listening on ") else {
            return Err(process.failure(&format!("unexpected first line {first_line:?}")));
        };
        process.base_url = addr.trim_end_matches('/').to_owned();
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
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Sluice(format!("no VmHWM in {path}")))
}

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, which Linux fixes at
/// 100 on every architecture sluice runs on.
const USER_HZ: u64 = 100;

/// CPU time (user + system, summed over every thread) of process `pid` so far, at
/// `1/USER_HZ` resolution. `pid` 0 means this process.
pub fn cpu_time(pid: u32) -> Result<Duration, BenchError> {
    let path = if pid == 0 {
        "/proc/self/stat".to_owned()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
    // Fields after the command name (which may hold spaces, so split at its last ')'):
    // state is field 3, utime field 14, stime field 15.
    let ticks = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
        .and_then(|fields| {
            let utime = fields.get(11)?.parse::<u64>().ok()?;
            let stime = fields.get(12)?.parse::<u64>().ok()?;
            Some(utime + stime)
        })
        .ok_or_else(|| BenchError::Sluice(format!("no utime/stime in {path}")))?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_peak_rss() {
        let rss = peak_rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }

    #[test]
    fn our_cpu_time_grows_with_work() {
        let before = cpu_time(0).unwrap();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(150) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = cpu_time(0).unwrap() - before;
        assert!(
            used >= Duration::from_millis(100),
            "{used:?} after spinning 150 ms"
        );
        assert_eq!(cpu_time(0).unwrap().as_millis() % 10, 0, "whole ticks");
    }
}
