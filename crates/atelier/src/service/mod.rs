//! The domain: what atelier does, independent of how it is asked (HTTP, CLI).
//! Services own transaction boundaries (each store call is one) and keep the
//! in-memory state (revocations, throttling) in step with the store.

pub mod accounts;
pub mod admin;
pub mod audit;

use std::net::IpAddr;

/// Where a request came from, for throttling and the audit log.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl Origin {
    /// Commands run from the command line on the server itself.
    pub fn cli() -> Self {
        Origin {
            ip: None,
            request_id: Some("cli".into()),
        }
    }
}
