//! Running `sluice serve` as a child process, and reading what it uses, for the
//! integration tests (`tests/support`) and the benchmarks (`sluice-benches`): one place
//! for how a node is started and found, so the two cannot drift apart.
//!
//! A node is started with `--listen 127.0.0.1:0` (a free port) and its own data directory;
//! its address is the first line it prints (`sluice listening on http://ADDR`), which it
//! prints as soon as it has bound, before recovery ends. Waiting until it is healthy is the
//! caller's (each has its own HTTP client). Resource figures come from `/proc`.

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The line a node prints once it listens, before its base URL.
pub const LISTENING_PREFIX: &str = "sluice listening on ";

/// `binary serve` on a free loopback port with data in `data_dir`; the environment
/// variables that would point it at other engines or another configuration are cleared.
/// Add `--config`, environment and stderr as needed, then [`spawn_listening`].
pub fn serve_command(binary: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SLUICE_NATS_URL")
        .env_remove("SLUICE_SCYLLA_NODES")
        .env_remove("SLUICE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command
}

/// Spawns `command` (from [`serve_command`]) and returns the child once it listens, with
/// its base URL (`http://ADDR`). A process that exits before printing its address gives
/// an error naming what it printed instead.
pub fn spawn_listening(mut command: Command) -> io::Result<(Child, String)> {
    let mut child = command.spawn()?;
    let Some(stdout) = child.stdout.take() else {
        return Err(io::Error::other("the child's stdout is not piped"));
    };
    let mut line = String::new();
    // A process that dies first closes stdout, which ends the read.
    BufReader::new(stdout).read_line(&mut line)?;
    match line.trim().strip_prefix(LISTENING_PREFIX) {
        Some(base) => Ok((child, base.trim_end_matches('/').to_owned())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(io::Error::other(format!(
                "expected {LISTENING_PREFIX:?} as the first line, got {line:?}"
            )))
        }
    }
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS`, `VmHWM` in kB, `Threads`), as written.
pub fn status_field(pid: u32, field: &str) -> io::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in {path}")))
}

/// Resident memory of `pid` now (`VmRSS`), in bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    Ok(status_field(pid, "VmRSS")? * 1024)
}

/// Peak resident memory of `pid` so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> io::Result<u64> {
    Ok(status_field(pid, "VmHWM")? * 1024)
}

/// Resets the peak resident memory of `pid` to its current RSS, so that
/// [`peak_rss_bytes`] tells the peak of what follows.
pub fn reset_peak_rss(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// Threads of `pid` now.
pub fn threads(pid: u32) -> io::Result<u64> {
    status_field(pid, "Threads")
}

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, which Linux fixes at
/// 100 on every architecture sluice runs on.
const USER_HZ: u64 = 100;

/// CPU time (user + system, summed over every thread) of process `pid` so far, at
/// `1/USER_HZ` resolution. `pid` 0 means this process.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let path = if pid == 0 {
        "/proc/self/stat".to_owned()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(&path)?;
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
        .ok_or_else(|| io::Error::other(format!("no utime/stime in {path}")))?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_memory_and_threads() {
        let pid = std::process::id();
        assert!(peak_rss_bytes(pid).unwrap() > 1024 * 1024);
        assert!(rss_bytes(pid).unwrap() > 1024 * 1024);
        assert!(threads(pid).unwrap() >= 1);
        assert!(status_field(pid, "NoSuchField").is_err());
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
            used >= Duration::from_millis(50),
            "{used:?} of CPU for 150 ms of spinning"
        );
        assert_eq!(cpu_time(0).unwrap().as_millis() % 10, 0, "whole ticks");
    }

    #[test]
    fn a_child_that_prints_something_else_is_refused() {
        let mut command = Command::new("echo");
        command.arg("hello").stdout(Stdio::piped());
        let error = spawn_listening(command).unwrap_err();
        assert!(error.to_string().contains("hello"), "{error}");
    }
}
