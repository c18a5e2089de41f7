//! The HTTP client: one keep-alive HTTP/1.1 connection per connection task, on hyper's
//! low-level `client::conn::http1` API.
//!
//! There is deliberately no pool: a connection task owns its [`Connection`] and sends one
//! request at a time on it, as wrk does, and drives the connection's I/O itself rather than
//! in a spawned task, so the request path has no lock, no pool lookup and no cross-task
//! hand-off. A connection that fails is dropped and re-established on the
//! next request; the failure is reported to the caller, which counts it.
//!
//! Only `http://` targets are supported (sluice serves plain HTTP; TLS belongs in front).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::LoadgenError;

/// The node under test: where to connect and which headers every request carries.
#[derive(Clone, Debug)]
pub struct Target {
    /// The base URL as given.
    pub base: String,
    /// Resolved address.
    pub addr: SocketAddr,
    /// Path prefix of the base URL (empty or starting with `/`, no trailing `/`).
    pub prefix: String,
    host_header: HeaderValue,
    auth_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    /// Parses `http://host[:port][/prefix]`, resolves the host, and prepares the auth
    /// headers (`x-api-key`, `Authorization: Bearer`).
    pub async fn resolve(
        base: &str,
        api_key: Option<&str>,
        token: Option<&str>,
    ) -> Result<Self, LoadgenError> {
        let invalid = |message: &str| LoadgenError::Invalid(format!("target {base}: {message}"));
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only http:// targets are supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|error| invalid(&format!("cannot resolve: {error}")))?
            .next()
            .ok_or_else(|| invalid("the host resolves to no address"))?;
        let host_header = HeaderValue::from_str(authority)
            .map_err(|_| invalid("the host is not a valid header"))?;
        let mut auth_headers = Vec::new();
        if let Some(key) = api_key {
            let value = HeaderValue::from_str(key).map_err(|_| {
                LoadgenError::Invalid("the API key is not a valid header value".into())
            })?;
            auth_headers.push((HeaderName::from_static("x-api-key"), value));
        }
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                LoadgenError::Invalid("the token is not a valid header value".into())
            })?;
            auth_headers.push((AUTHORIZATION, value));
        }
        Ok(Self {
            base: base.to_owned(),
            addr,
            prefix: prefix.to_owned(),
            host_header,
            auth_headers,
        })
    }

    /// A request to `path_and_query` (starting with `/`) with the target's headers.
    pub fn request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, LoadgenError> {
        let uri = format!("{}{}", self.prefix, path_and_query);
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, self.host_header.clone());
        for (name, value) in &self.auth_headers {
            builder = builder.header(name, value);
        }
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        builder
            .body(Full::new(body))
            .map_err(|error| LoadgenError::Invalid(format!("request {path_and_query}: {error}")))
    }
}

/// An answer, read in full.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The whole body.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TCP connection or the HTTP handshake failed.
    #[error("connect: {0}")]
    Connect(String),
    /// The connection broke while writing or reading.
    #[error("i/o: {0}")]
    Io(String),
    /// No complete answer within the request timeout.
    #[error("timed out")]
    Timeout,
    /// The peer closed the connection before answering.
    #[error("connection closed")]
    Closed,
}

impl TransportError {
    /// A fixed word for reports (`connect`, `io`, `timeout`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Io(_) | Self::Closed => "io",
            Self::Timeout => "timeout",
        }
    }
}

type Driver = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// An open connection: the request handle and the future that performs its I/O.
struct Open {
    sender: SendRequest<Full<Bytes>>,
    // Driven inline by the task that sends (see `drive`), never spawned: a request then
    // costs no cross-task wake-up, which is most of a trivial request's client-side cost.
    driver: Pin<Box<Driver>>,
    /// The driver has completed (peer closed or error): it must not be polled again, and
    /// the connection is replaced after the current exchange.
    ended: bool,
}

/// Polls `work` while driving the connection's I/O (`driver`) in the same task.
async fn drive<F: Future>(
    driver: &mut Pin<Box<Driver>>,
    ended: &mut bool,
    work: F,
) -> Result<F::Output, TransportError> {
    tokio::pin!(work);
    if !*ended {
        tokio::select! {
            biased;
            output = &mut work => return Ok(output),
            result = driver.as_mut() => {
                *ended = true;
                if let Err(error) = result {
                    return Err(TransportError::Io(error.to_string()));
                }
            }
        }
    }
    // The peer closed after sending (HTTP/1.0 servers, `Connection: close`): what the
    // driver already delivered can still complete the work, or fail it.
    Ok(work.await)
}

/// One keep-alive connection, re-established on demand.
pub struct Connection {
    addr: SocketAddr,
    open: Option<Open>,
}

impl Connection {
    /// A connection to `target`, opened on first use.
    pub fn new(target: &Target) -> Self {
        Self {
            addr: target.addr,
            open: None,
        }
    }

    async fn open(addr: SocketAddr) -> Result<Open, TransportError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|error| TransportError::Connect(error.to_string()))?;
        // Requests are small and latency-bound: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| TransportError::Connect(error.to_string()))?;
        Ok(Open {
            sender,
            driver: Box::pin(driver),
            ended: false,
        })
    }

    /// Sends `request` and reads the whole answer, within `timeout` (connecting included).
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let result = tokio::time::timeout(timeout, self.exchange(request)).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_) => Err(TransportError::Timeout),
        };
        if outcome.is_err() {
            // A half-used connection cannot be trusted for the next request.
            self.open = None;
        }
        outcome
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, TransportError> {
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.ended || open.sender.is_closed())
        {
            self.open = None;
        }
        // A kept-alive connection the server closed while idle is only noticed now; nothing
        // was sent on it yet, so one fresh connection is tried before reporting a failure.
        let mut fresh = false;
        loop {
            if self.open.is_none() {
                self.open = Some(Self::open(self.addr).await?);
                fresh = true;
            }
            let Some(open) = self.open.as_mut() else {
                return Err(TransportError::Closed);
            };
            match drive(&mut open.driver, &mut open.ended, open.sender.ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) | Err(_) if !fresh => self.open = None,
                Ok(Err(error)) => return Err(TransportError::Io(error.to_string())),
                Err(error) => return Err(error),
            }
        }
        let Some(open) = self.open.as_mut() else {
            return Err(TransportError::Closed);
        };
        let response_future = open.sender.send_request(request);
        let response = drive(&mut open.driver, &mut open.ended, response_future)
            .await?
            .map_err(|error| TransportError::Io(error.to_string()))?;
        let status = response.status().as_u16();
        let body = drive(
            &mut open.driver,
            &mut open.ended,
            response.into_body().collect(),
        )
        .await?
        .map_err(|error| TransportError::Io(error.to_string()))?
        .to_bytes();
        Ok(Answer { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_parse_with_and_without_port_and_prefix() {
        let target = Target::resolve("http://127.0.0.1:8080/base/", Some("k"), Some("t"))
            .await
            .expect("valid");
        assert_eq!(target.addr.port(), 8080);
        assert_eq!(target.prefix, "/base");
        let request = target
            .request(Method::GET, "/x?y=1", None, Bytes::new())
            .expect("request");
        assert_eq!(request.uri(), "/base/x?y=1");
        assert_eq!(request.headers()["x-api-key"], "k");
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer t");
        assert_eq!(request.headers()[HOST], "127.0.0.1:8080");
        let default_port = Target::resolve("http://127.0.0.1", None, None)
            .await
            .expect("valid");
        assert_eq!(default_port.addr.port(), 80);
        assert!(Target::resolve("https://127.0.0.1", None, None)
            .await
            .is_err());
    }
}
