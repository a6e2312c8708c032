//! The domain: what atelier does, independent of how it is asked (HTTP, CLI).
//! Services own transaction boundaries (each store call is one) and keep the
//! in-memory state (revocations, throttling) in step with the store.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod budgets;
pub mod catalog;
pub mod chat;
pub mod chat_body;
pub mod generate;
pub mod generation_error;
pub mod keys;
pub mod limits;
pub mod media;
pub mod passthrough;
pub mod routing;
pub mod usage;
pub mod video;
pub mod write_behind;

use std::sync::Arc;

use atelier_store::Role;

use self::catalog::ModelCatalog;
use self::generation_error::GenerationError;
use self::routing::{Action, ModelRouter, Plan};

/// How a generation request is routed and checked: the role's model restrictions,
/// the admins' allow-list (for plain models; aliases are the admins' own), and the
/// chain of models to try.
#[derive(Clone)]
pub struct Routing {
    pub router: Arc<ModelRouter>,
    pub catalog: Arc<ModelCatalog>,
}

impl Routing {
    pub fn plan(&self, requested: &str, action: Action, role: Role) -> Result<Plan, GenerationError> {
        if !self.router.is_alias(requested) {
            self.catalog.check_allowed(requested)?;
        }
        self.router.plan(requested, action, role)
    }
}

use std::net::IpAddr;
use std::time::Duration;

/// A std duration as a chrono one, saturating instead of failing.
pub(crate) fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

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
