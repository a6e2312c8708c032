//! Exponential back-off of failed logins, per account and per client address.
//!
//! After a number of free failures each further failure doubles the wait before the
//! next attempt is heard, up to a ceiling; a success clears the account's count, and
//! counts are forgotten once the ceiling has passed without failures. So guessing
//! slows to a crawl, while an owner locked out by someone else's guessing waits at
//! most the ceiling: there is never a permanent lockout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Entries kept before stale ones are swept, bounding memory under a spray of
/// usernames or addresses.
const SWEEP_ABOVE: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub account_free_failures: u32,
    pub ip_free_failures: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Ip(IpAddr),
}

pub struct LoginThrottle {
    policy: Policy,
    entries: Mutex<HashMap<Key, Failures>>,
}

impl LoginThrottle {
    pub fn new(policy: Policy) -> Self {
        LoginThrottle {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long the caller must wait before trying this account from this address,
    /// or `None` if it may try now.
    pub fn wait(&self, account: &str, ip: Option<IpAddr>) -> Option<Duration> {
        self.wait_at(account, ip, Instant::now())
    }

    fn wait_at(&self, account: &str, ip: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock();
        let account_wait = entries
            .get(&Key::Account(account.to_owned()))
            .and_then(|f| self.remaining(f, self.policy.account_free_failures, now));
        let ip_wait = ip
            .and_then(|ip| entries.get(&Key::Ip(ip)))
            .and_then(|f| self.remaining(f, self.policy.ip_free_failures, now));
        account_wait.max(ip_wait)
    }

    pub fn record_failure(&self, account: &str, ip: Option<IpAddr>) {
        self.record_failure_at(account, ip, Instant::now());
    }

    fn record_failure_at(&self, account: &str, ip: Option<IpAddr>, now: Instant) {
        let mut entries = self.entries.lock();
        if entries.len() > SWEEP_ABOVE {
            let forget = self.policy.max_delay;
            entries.retain(|_, f| now.duration_since(f.last) < forget);
        }
        let keys = std::iter::once(Key::Account(account.to_owned())).chain(ip.map(Key::Ip));
        for key in keys {
            let f = entries.entry(key).or_insert(Failures { count: 0, last: now });
            // A long quiet spell wipes the slate.
            if now.duration_since(f.last) >= self.policy.max_delay {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    /// A successful login clears the account (not the address: one good password
    /// must not reset the count of a host that is guessing many accounts).
    pub fn record_success(&self, account: &str) {
        self.entries.lock().remove(&Key::Account(account.to_owned()));
    }

    fn remaining(&self, f: &Failures, free: u32, now: Instant) -> Option<Duration> {
        let over = f.count.checked_sub(free)?;
        if over == 0 {
            return None;
        }
        let delay = self
            .policy
            .base_delay
            .saturating_mul(2u32.saturating_pow(over.saturating_sub(1).min(31)))
            .min(self.policy.max_delay);
        delay
            .checked_sub(now.duration_since(f.last))
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(Policy {
            account_free_failures: 3,
            ip_free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        })
    }

    #[test]
    fn backs_off_exponentially_then_forgets() {
        let t = throttle();
        let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.wait_at("a@x.io", ip, start), None);
            t.record_failure_at("a@x.io", ip, start);
        }
        assert_eq!(t.wait_at("a@x.io", ip, start), None, "three free failures");
        let mut expected = Duration::from_secs(1);
        for _ in 0..8 {
            t.record_failure_at("a@x.io", ip, start);
            assert_eq!(
                t.wait_at("a@x.io", None, start),
                Some(expected.min(Duration::from_secs(60)))
            );
            expected *= 2;
        }
        assert_eq!(
            t.wait_at("a@x.io", None, start),
            Some(Duration::from_secs(60)),
            "capped"
        );
        let later = start + Duration::from_secs(61);
        assert_eq!(
            t.wait_at("a@x.io", None, later),
            None,
            "never a permanent lockout"
        );
        t.record_failure_at("a@x.io", None, later);
        assert_eq!(
            t.wait_at("a@x.io", None, later),
            None,
            "a quiet spell reset the count"
        );
    }

    #[test]
    fn addresses_are_throttled_across_accounts_and_success_clears_the_account() {
        let t = throttle();
        let ip: Option<IpAddr> = Some([10, 0, 0, 2].into());
        let now = Instant::now();
        for i in 0..6 {
            t.record_failure_at(&format!("user{i}@x.io"), ip, now);
        }
        assert_eq!(t.wait_at("fresh@x.io", ip, now), Some(Duration::from_secs(1)));
        assert_eq!(t.wait_at("fresh@x.io", Some([10, 0, 0, 3].into()), now), None);

        for _ in 0..4 {
            t.record_failure_at("b@x.io", None, now);
        }
        assert!(t.wait_at("b@x.io", None, now).is_some());
        t.record_success("b@x.io");
        assert_eq!(t.wait_at("b@x.io", None, now), None);
    }
}
