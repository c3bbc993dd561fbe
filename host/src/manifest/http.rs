//! `[http]`: the node's HTTP listener and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{Invalid, above_zero};

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `listen = "127.0.0.1:8080"`
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// `max_body_kb = 1024`: larger request bodies are refused with 413.
    #[serde(default = "default_max_body_kb")]
    pub max_body_kb: usize,
    /// `max_connections = 1024`: connections open at once; one more is
    /// answered 503 and closed. The admin API's listener has the same limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `header_timeout_s = 10`: a request's head must arrive within this
    /// many seconds, or the connection is closed (a slow client, or a
    /// keep-alive connection idle that long). Both listeners.
    #[serde(default = "default_header_timeout_s")]
    pub header_timeout_s: u64,
    /// `body_timeout_s = 60`: a request's body must arrive within this many
    /// seconds, or it is answered 408. Both listeners: raise it to deploy
    /// large components over slow links.
    #[serde(default = "default_body_timeout_s")]
    pub body_timeout_s: u64,
    /// `webhook_ca_file = "certs/ca.pem"`: the CA certificates (PEM) that
    /// `https://` webhook endpoints must chain to [default: the system's
    /// trusted roots]. Relative to the manifest.
    pub webhook_ca_file: Option<PathBuf>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            max_body_kb: default_max_body_kb(),
            max_connections: default_max_connections(),
            header_timeout_s: default_header_timeout_s(),
            body_timeout_s: default_body_timeout_s(),
            webhook_ca_file: None,
        }
    }
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body_kb() -> usize {
    1024
}

fn default_max_connections() -> usize {
    1024
}

fn default_header_timeout_s() -> u64 {
    10
}

fn default_body_timeout_s() -> u64 {
    60
}

impl HttpSection {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        above_zero(
            "http.",
            &[
                ("max_body_kb", self.max_body_kb == 0),
                ("max_connections", self.max_connections == 0),
                ("header_timeout_s", self.header_timeout_s == 0),
                ("body_timeout_s", self.body_timeout_s == 0),
            ],
        )
    }
}
