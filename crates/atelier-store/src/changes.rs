//! Changes other instances must apply to their in-memory state.
//!
//! Access tokens, API keys, budgets and the model allow-list are checked in memory
//! (no database round trip per request). With one process the services update that
//! memory themselves; with several on one database, a backend that can tell them
//! (PostgreSQL: `NOTIFY` in the same transaction as the change) hands each instance
//! a [`ChangeFeed`], and the instance reloads what a [`Change`] names.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// What changed. Each says what to reload, never the new value: the store stays the
/// one truth, and a late or repeated change is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The user's role, password or existence: reload their access-token state.
    User(Uuid),
    /// A login session (refresh-token family) ended: its access tokens stop working.
    SessionEnded(Uuid),
    /// The user's API keys were created or revoked.
    ApiKeys(Uuid),
    /// The user's budget override changed.
    Budget(Uuid),
    /// A run-time setting changed.
    Setting(String),
    /// Changes may have been missed (the feed's connection was lost and is back):
    /// reload everything.
    Resync,
}

/// Changes as they are committed, by this instance or any other.
pub type ChangeFeed = tokio::sync::mpsc::Receiver<Change>;

impl fmt::Display for Change {
    /// The wire form, `kind:argument`, short enough for any notification payload.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::User(id) => write!(f, "user:{id}"),
            Change::SessionEnded(id) => write!(f, "session:{id}"),
            Change::ApiKeys(id) => write!(f, "keys:{id}"),
            Change::Budget(id) => write!(f, "budget:{id}"),
            Change::Setting(name) => write!(f, "setting:{name}"),
            Change::Resync => f.write_str("resync:"),
        }
    }
}

impl FromStr for Change {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = s.split_once(':').ok_or_else(|| format!("not a change: {s:?}"))?;
        let id = || Uuid::parse_str(arg).map_err(|e| format!("bad id in change {s:?}: {e}"));
        Ok(match kind {
            "user" => Change::User(id()?),
            "session" => Change::SessionEnded(id()?),
            "keys" => Change::ApiKeys(id()?),
            "budget" => Change::Budget(id()?),
            "setting" => Change::Setting(arg.to_owned()),
            "resync" => Change::Resync,
            other => return Err(format!("unknown change kind {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_their_wire_form() {
        let id = Uuid::now_v7();
        for change in [
            Change::User(id),
            Change::SessionEnded(id),
            Change::ApiKeys(id),
            Change::Budget(id),
            Change::Setting("allowed_models".into()),
            Change::Resync,
        ] {
            assert_eq!(change.to_string().parse::<Change>(), Ok(change));
        }
        assert!("user:nope".parse::<Change>().is_err());
        assert!("weather:sunny".parse::<Change>().is_err());
    }
}
