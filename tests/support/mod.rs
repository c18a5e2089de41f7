//! Test harness: a real `sluice serve` process on a random port and a temp data dir,
//! plus the standard corpus.
// Shared by several test binaries; each uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `sluice serve` child process.
pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    config: Option<PathBuf>,
    envs: Vec<(String, String)>,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts a server on `data_dir`, optionally with a TOML configuration text, and waits
    /// until its healthcheck answers healthy.
    pub async fn start(data_dir: &Path, config_toml: Option<&str>) -> Server {
        Self::start_with(data_dir, config_toml, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables (kept across restarts).
    pub async fn start_with(
        data_dir: &Path,
        config_toml: Option<&str>,
        envs: &[(&str, &str)],
    ) -> Server {
        let config = config_toml.map(|text| {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, text).expect("write config");
            path
        });
        let envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(data_dir.to_path_buf(), config, envs).await
    }

    async fn spawn(
        data_dir: PathBuf,
        config: Option<PathBuf>,
        envs: Vec<(String, String)>,
    ) -> Server {
        let server = Self::spawn_unready(data_dir, config, envs);
        server.wait_healthy().await;
        server
    }

    /// Starts the process and returns once it listens, without waiting for recovery.
    fn spawn_unready(
        data_dir: PathBuf,
        config: Option<PathBuf>,
        envs: Vec<(String, String)>,
    ) -> Server {
        // `SLUICE_TEST_BINARY` runs the suite against another build (a release binary, a
        // copy taken before the target directory changes).
        let binary = std::env::var_os("SLUICE_TEST_BINARY").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
            PathBuf::from,
        );
        let mut command = sluice_harness::serve_command(&binary, &data_dir);
        command.env("SLUICE_LOG", "warn").stderr(Stdio::inherit());
        if let Some(path) = &config {
            command.arg("--config").arg(path);
        }
        command.envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (child, base) = sluice_harness::spawn_listening(command).expect("start sluice serve");
        Server {
            child,
            base,
            data_dir,
            config,
            envs,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self
                .client
                .get(self.url("/_internal_/healthcheck"))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's process id (to read its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server process's resident memory now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        sluice_harness::rss_bytes(self.pid()).expect("VmRSS of the server")
    }

    /// The server process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        sluice_harness::peak_rss_bytes(self.pid()).expect("VmHWM of the server")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }

    /// `GET path` answered 200 with a JSON body: the body.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON body")
    }

    /// `kill -9`, then a new process on the same data directory.
    pub async fn kill9_and_restart(mut self) -> Server {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
        let data_dir = self.data_dir.clone();
        let config = self.config.take();
        let envs = std::mem::take(&mut self.envs);
        Self::spawn(data_dir, config, envs).await
    }

    /// Waits (bounded) for the process to exit on its own, and returns how it exited.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        assert!(self.try_signal(name), "kill -{name} failed");
    }

    /// Sends a signal; false if the process is already gone.
    pub fn try_signal(&self, name: &str) -> bool {
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status()
            .expect("run kill")
            .success()
    }

    /// A new process on the same data directory and configuration, with `envs` instead
    /// of the previous environment; the old process must have exited. Waits until healthy.
    pub async fn restart_with(self, envs: &[(&str, &str)]) -> Server {
        let server = self.restart_unready(envs);
        server.wait_healthy().await;
        server
    }

    /// Like [`Server::restart_with`], returning as soon as the new process listens.
    pub fn restart_unready(mut self, envs: &[(&str, &str)]) -> Server {
        let data_dir = self.data_dir.clone();
        let config = self.config.take();
        let envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn_unready(data_dir, config, envs)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn put_schema(&self, collection: &str, schema: &Value) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v1/collections/{collection}")))
            .json(schema)
            .send()
            .await
            .expect("PUT collection")
    }

    /// POSTs NDJSON; returns status and JSON body.
    pub async fn ingest(
        &self,
        collection: &str,
        body: impl Into<reqwest::Body>,
        wait: &str,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!(
                "/v1/collections/{collection}/documents?wait={wait}"
            )))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("POST documents");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn search(&self, collection: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(&format!("/v1/collections/{collection}/search")))
            .query(query)
            .send()
            .await
            .expect("search");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn total(&self, collection: &str, q: &str) -> u64 {
        let (status, body) = self.search(collection, &[("q", q), ("limit", "0")]).await;
        assert_eq!(status, 200, "{body}");
        body["total"].as_u64().expect("total")
    }

    /// The value of a counter in `/metrics`, summed over its label sets.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The value of one series in `/metrics`: `name` with exactly the label text
    /// `labels` (e.g. `dependency="store"`); `None` when absent.
    pub async fn series(&self, name: &str, labels: &str) -> Option<f64> {
        let text = self.get("/metrics").await.text().await.expect("text");
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
    }

    /// The state of a dependency's circuit breaker: 0 closed, 1 half-open, 2 open.
    pub async fn breaker_state(&self, dependency: &str) -> Option<f64> {
        self.series(
            "sluice_breaker_state",
            &format!("dependency=\"{dependency}\""),
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The first `n` documents of the standard corpus (the repository's generator,
/// `sluice_loadgen::corpus`, seed 42), as NDJSON lines and parsed documents.
pub fn corpus(n: usize) -> (Vec<String>, Vec<Value>) {
    let lines = sluice_loadgen::corpus::standard_lines(n);
    let docs = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    (lines, docs)
}

/// The corpus schema (`sluice-loadgen corpus --schema`).
pub fn corpus_schema() -> Value {
    serde_json::from_str(sluice_loadgen::corpus::STANDARD_SCHEMA_DOCUMENT).expect("schema json")
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Server {
    /// Like [`Server::start`], with the server's log (stderr, at `info`) written to
    /// `log_path` instead of the test's own stderr, for tests that read the log.
    pub async fn start_logging_to(
        data_dir: &Path,
        config_toml: Option<&str>,
        log_path: &Path,
    ) -> Server {
        let config = config_toml.map(|text| {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, text).expect("write config");
            path
        });
        let binary = std::env::var_os("SLUICE_TEST_BINARY").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
            PathBuf::from,
        );
        let log = std::fs::File::create(log_path).expect("create the log file");
        let mut command = sluice_harness::serve_command(&binary, data_dir);
        command.env("SLUICE_LOG", "info").stderr(log);
        if let Some(path) = &config {
            command.arg("--config").arg(path);
        }
        let (child, base) = sluice_harness::spawn_listening(command).expect("start sluice serve");
        let server = Server {
            child,
            base,
            data_dir: data_dir.to_path_buf(),
            config,
            envs: Vec::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        };
        server.wait_healthy().await;
        server
    }

    /// The address the server listens on (`127.0.0.1:port`).
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("a socket address in the base URL")
    }

    /// The server process's thread count now (`Threads:` in `/proc/<pid>/status`).
    pub fn threads(&self) -> u64 {
        sluice_harness::threads(self.pid()).expect("Threads of the server")
    }

    /// Resets the server process's peak resident memory (`VmHWM`) to its current RSS, so
    /// that [`Server::peak_rss_bytes`] tells the peak of what follows.
    pub fn reset_peak_rss(&self) {
        sluice_harness::reset_peak_rss(self.pid()).expect("/proc/<pid>/clear_refs");
    }
}
