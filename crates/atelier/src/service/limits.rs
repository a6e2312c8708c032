//! Rate limits: a sliding window per (principal, scope).
//!
//! The window is exact (a log of the hits inside it), so a limit of N per window is
//! never exceeded in any window, whatever the timing. The principal is the API
//! key, or the user for session requests, or the client address for logins.
//! Limits come per role from the configuration. One instance keeps the logs in
//! memory; with `ATELIER_REDIS_URL` they live in Redis (a sorted set per key,
//! changed by one atomic script using Redis's clock), so several instances share
//! them and together never allow more than the limit.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use atelier_store::Role;
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    Chat,
    Images,
    Videos,
    Login,
}

impl LimitScope {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Chat => "chat",
            LimitScope::Images => "images",
            LimitScope::Videos => "videos",
            LimitScope::Login => "login",
        }
    }
}

/// `N/period`, e.g. `60/1m`: at most N hits in any window of that length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (count, window) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not N/period, e.g. 60/1m"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the count is not a whole number"))?;
        let window = humantime::parse_duration(window.trim()).map_err(|e| format!("{s:?}: {e}"))?;
        if count == 0 || window.is_zero() {
            return Err(format!("{s:?}: count and period must be above zero"));
        }
        Ok(Rate { count, window })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.window))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The outcome of one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until a slot frees up (for a refusal: when to retry).
    pub reset_after: Duration,
}

/// Limits per role and scope; `None` is unlimited.
#[derive(Debug, Clone, Default)]
pub struct LimitTable {
    pub by_role: HashMap<(Role, LimitScope), Rate>,
    pub login: Option<Rate>,
}

pub struct RateLimiter {
    table: LimitTable,
    backend: Backend,
}

enum Backend {
    Memory(Mutex<HashMap<String, VecDeque<Instant>>>),
    Redis {
        manager: redis::aio::ConnectionManager,
        prefix: String,
    },
}

/// Keys kept in memory before idle ones are swept.
const SWEEP_ABOVE: usize = 100_000;

const REDIS_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  count = count + 1
  allowed = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
return {allowed, limit - count, reset}
"#;

impl RateLimiter {
    pub fn in_memory(table: LimitTable) -> Self {
        RateLimiter {
            table,
            backend: Backend::Memory(Mutex::default()),
        }
    }

    /// Keys are `<prefix>:rl:<scope>:<principal>`.
    pub async fn with_redis(table: LimitTable, url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let manager = redis::aio::ConnectionManager::new(client).await?;
        Ok(RateLimiter {
            table,
            backend: Backend::Redis {
                manager,
                prefix: prefix.to_owned(),
            },
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "in memory",
            Backend::Redis { .. } => "Redis",
        }
    }

    /// Counts a hit of `principal` on `scope` for a `role`; `None` when unlimited.
    pub async fn hit(&self, principal: &str, role: Role, scope: LimitScope) -> Option<Decision> {
        let rate = if scope == LimitScope::Login {
            self.table.login?
        } else {
            *self.table.by_role.get(&(role, scope))?
        };
        Some(match &self.backend {
            Backend::Memory(logs) => {
                let key = format!("{}:{principal}", scope.as_str());
                memory_hit(logs, &key, rate, Instant::now())
            }
            Backend::Redis { manager, prefix } => {
                let key = format!("{prefix}:rl:{}:{principal}", scope.as_str());
                match redis_hit(manager.clone(), &key, rate).await {
                    Ok(decision) => decision,
                    Err(e) => {
                        // A limiter outage must not take generation down with it.
                        tracing::warn!(error = %e, "rate limiter unavailable; request allowed");
                        Decision {
                            allowed: true,
                            limit: rate.count,
                            remaining: rate.count,
                            reset_after: rate.window,
                        }
                    }
                }
            }
        })
    }
}

fn memory_hit(
    logs: &Mutex<HashMap<String, VecDeque<Instant>>>,
    key: &str,
    rate: Rate,
    now: Instant,
) -> Decision {
    let mut logs = logs.lock();
    if logs.len() > SWEEP_ABOVE {
        logs.retain(|_, log| {
            log.back()
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(86_400))
        });
    }
    let log = logs.entry(key.to_owned()).or_default();
    while log.front().is_some_and(|t| now.duration_since(*t) >= rate.window) {
        log.pop_front();
    }
    let allowed = log.len() < rate.count as usize;
    if allowed {
        log.push_back(now);
    }
    let reset_after = log.front().map_or(rate.window, |oldest| {
        rate.window.saturating_sub(now.duration_since(*oldest))
    });
    Decision {
        allowed,
        limit: rate.count,
        remaining: rate
            .count
            .saturating_sub(u32::try_from(log.len()).unwrap_or(u32::MAX)),
        reset_after,
    }
}

async fn redis_hit(
    mut manager: redis::aio::ConnectionManager,
    key: &str,
    rate: Rate,
) -> Result<Decision, redis::RedisError> {
    let nonce: u64 = rand::random();
    let window_ms = u64::try_from(rate.window.as_millis()).unwrap_or(u64::MAX);
    let (allowed, remaining, reset_ms): (i64, i64, i64) = redis::Script::new(REDIS_SCRIPT)
        .key(key)
        .arg(window_ms)
        .arg(rate.count)
        .arg(nonce)
        .invoke_async(&mut manager)
        .await?;
    Ok(Decision {
        allowed: allowed == 1,
        limit: rate.count,
        remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
        reset_after: Duration::from_millis(u64::try_from(reset_ms.max(0)).unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            "60/1m".parse(),
            Ok(Rate {
                count: 60,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!("5/2s".parse::<Rate>().map(|r| r.to_string()), Ok("5/2s".into()));
        assert!("0/1m".parse::<Rate>().is_err());
        assert!("sixty/1m".parse::<Rate>().is_err());
        assert!("60".parse::<Rate>().is_err());
    }

    #[test]
    fn the_window_slides_and_is_never_exceeded() {
        let logs = Mutex::default();
        let rate = Rate {
            count: 3,
            window: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(memory_hit(&logs, "k", rate, at(0)).allowed);
        assert!(memory_hit(&logs, "k", rate, at(4)).allowed);
        let third = memory_hit(&logs, "k", rate, at(6));
        assert!(third.allowed && third.remaining == 0);
        let refused = memory_hit(&logs, "k", rate, at(9));
        assert!(!refused.allowed);
        assert_eq!(
            refused.reset_after,
            Duration::from_secs(1),
            "the first hit leaves the window at 10 s"
        );
        assert!(memory_hit(&logs, "k", rate, at(10)).allowed, "one slot freed");
        assert!(
            !memory_hit(&logs, "k", rate, at(13)).allowed,
            "4 s and 6 s are still inside"
        );
        assert!(
            memory_hit(&logs, "other", rate, at(13)).allowed,
            "keys are independent"
        );
    }
}
