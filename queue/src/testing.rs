//! A real nats-server for tests: random port, temporary store, killed on drop.
//!
//! [`NatsServer::start`] runs `nats-server -js -p -1 -a 127.0.0.1 -sd <tempdir>`,
//! learns the port the server picked from its ports file (`--ports_file_dir`), and
//! returns once the port accepts connections. [`NatsServer::restart`] kills the server
//! (`SIGKILL`, like a crash) and starts it again on the same port and store, so a test
//! can check what survives. Dropping the fixture kills the server and removes its
//! directory.
//!
//! The binary: `SLUICE_NATS_SERVER` when set, else `nats-server` on `PATH`, else
//! `<repository>/.tools/venv/bin/nats-server` (where `./scripts/test` installs it).
//! When none is found, starting fails with a message saying so — tests that need a
//! server fail, they never skip.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the nats-server binary to use.
pub const NATS_SERVER_ENV: &str = "SLUICE_NATS_SERVER";

/// How long a starting server may take to accept connections.
const START_PATIENCE: Duration = Duration::from_secs(15);

/// Why the fixture could not run a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsServerError {
    /// No binary was found.
    #[error(
        "nats-server not found: set {NATS_SERVER_ENV} to its path, put it on PATH, or run \
         ./scripts/test once (it installs nats-server into .tools/venv)"
    )]
    NotFound,
    /// The binary could not be started or its directory prepared.
    #[error("cannot run {binary}: {source}")]
    Io {
        /// The binary.
        binary: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The server did not come up in time, or exited.
    #[error("nats-server did not start: {reason}; last log lines:\n{log_tail}")]
    NotStarted {
        /// What went wrong.
        reason: String,
        /// The end of the server's log.
        log_tail: String,
    },
}

/// A running nats-server with JetStream (see the module documentation).
pub struct NatsServer {
    binary: PathBuf,
    /// Holds `store/`, `ports/` and `server.log`.
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// A configuration file passed with `-c` (the command line's options win over it).
    config: Option<PathBuf>,
}

/// Finds the nats-server binary (see the module documentation).
pub fn find_nats_server() -> Result<PathBuf, NatsServerError> {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV).filter(|path| !path.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(path) = on_path {
        return Ok(path);
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".tools/venv/bin/nats-server");
    if installed.is_file() {
        return Ok(installed);
    }
    Err(NatsServerError::NotFound)
}

impl NatsServer {
    /// Starts a server, panicking with a clear message when it cannot (tests fail).
    pub fn start() -> NatsServer {
        match NatsServer::try_start() {
            Ok(server) => server,
            Err(error) => panic!("{error}"),
        }
    }

    /// Starts a server on a port of its choosing, with a fresh store.
    pub fn try_start() -> Result<NatsServer, NatsServerError> {
        Self::try_start_with_config(None)
    }

    /// Like [`NatsServer::start`], with a configuration file of `config` (e.g.
    /// `max_payload: 8MB`) for what the command line cannot set.
    pub fn start_with_config(config: &str) -> NatsServer {
        match NatsServer::try_start_with_config(Some(config)) {
            Ok(server) => server,
            Err(error) => panic!("{error}"),
        }
    }

    fn try_start_with_config(config: Option<&str>) -> Result<NatsServer, NatsServerError> {
        let binary = find_nats_server()?;
        let io = |source| NatsServerError::Io {
            binary: binary.clone(),
            source,
        };
        let dir = tempfile::tempdir().map_err(io)?;
        let config = match config {
            Some(text) => {
                let path = dir.path().join("nats-server.conf");
                std::fs::write(&path, text).map_err(io)?;
                Some(path)
            }
            None => None,
        };
        let mut server = NatsServer {
            binary,
            dir,
            port: 0,
            child: None,
            config,
        };
        server.spawn(None)?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Kills the server (`SIGKILL`) and waits for it to exit; the store is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: either way it is not running afterwards.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store.
    pub fn restart(&mut self) -> Result<(), NatsServerError> {
        self.stop();
        self.spawn(Some(self.port))
    }

    /// Starts a stopped server again on the same port and store.
    pub fn start_again(&mut self) -> Result<(), NatsServerError> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn(Some(self.port))
    }

    fn io_error(&self, source: std::io::Error) -> NatsServerError {
        NatsServerError::Io {
            binary: self.binary.clone(),
            source,
        }
    }

    fn spawn(&mut self, port: Option<u16>) -> Result<(), NatsServerError> {
        let ports_dir = self.dir.path().join("ports");
        // A stale ports file from the previous run would name a dead process.
        if ports_dir.exists() {
            std::fs::remove_dir_all(&ports_dir).map_err(|error| self.io_error(error))?;
        }
        std::fs::create_dir_all(&ports_dir).map_err(|error| self.io_error(error))?;
        let port_arg = port.map_or_else(|| "-1".to_owned(), |port| port.to_string());
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| self.io_error(error))?;
        self.child = Some(child);
        match self.wait_until_ready(&ports_dir) {
            Ok(port) => {
                self.port = port;
                Ok(())
            }
            Err(reason) => {
                self.stop();
                Err(NatsServerError::NotStarted {
                    reason,
                    log_tail: self.log_tail(),
                })
            }
        }
    }

    /// Waits for the ports file, then for the port to accept a connection.
    fn wait_until_ready(&mut self, ports_dir: &Path) -> Result<u16, String> {
        let deadline = Instant::now() + START_PATIENCE;
        let mut port = None;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("it exited with {status}"));
                }
            }
            if port.is_none() {
                port = read_ports_file(ports_dir);
            }
            if let Some(port) = port {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(port);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not accepting connections after {START_PATIENCE:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client port from the `*.ports` file nats-server writes once it listens.
fn read_ports_file(dir: &Path) -> Option<u16> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "ports") {
            let text = std::fs::read_to_string(&path).ok()?;
            let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
            let url = ports.get("nats")?.get(0)?.as_str()?;
            return url.rsplit(':').next()?.parse().ok();
        }
    }
    None
}
