//! Budgets: per-user caps on spend (USD per day and per month) and on requests.
//!
//! Caps come from the role's defaults in the configuration, overridden per user by
//! an admin. Spend is kept in an in-memory ledger per user (today and this month,
//! UTC), filled from the usage records at start-up and fed by every usage record
//! written since. A request is checked before the upstream is called and reserves
//! an estimate of its cost; the reservation is released when the request ends and
//! its real cost arrives through its usage record. So a stream that costs more
//! than its estimate still finishes, and the next request is refused.

use std::collections::HashMap;
use std::sync::Arc;

use atelier_store::{BudgetOverride, Role, Spend, Store, StoreError, nanos_to_usd, usd_to_nanos};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use super::Origin;
use super::audit::{Audit, Entry, Event};

/// Caps in force for one user; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub daily_nanousd: Option<i64>,
    pub monthly_nanousd: Option<i64>,
    pub daily_requests: Option<u64>,
    pub monthly_requests: Option<u64>,
}

/// Which cap was hit, how much is left of it, and when it resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub period: &'static str,
    pub what: &'static str,
    pub limit: String,
    pub remaining_usd: f64,
    pub resets_at: DateTime<Utc>,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "your {} {} budget of {} is used up; it resets at {}",
            self.period,
            self.what,
            self.limit,
            self.resets_at.format("%Y-%m-%d %H:%M UTC")
        )
    }
}

/// One user's use of the current day and month.
#[derive(Debug, Clone, Copy, Default)]
struct Ledger {
    day: Option<NaiveDate>,
    month: Option<(i32, u32)>,
    day_nanousd: i64,
    month_nanousd: i64,
    day_requests: u64,
    month_requests: u64,
    reserved_nanousd: i64,
}

impl Ledger {
    /// Starts a new day or month when the calendar has moved on.
    fn roll(&mut self, now: DateTime<Utc>) {
        let day = now.date_naive();
        if self.day != Some(day) {
            self.day = Some(day);
            self.day_nanousd = 0;
            self.day_requests = 0;
        }
        let month = (now.year(), now.month());
        if self.month != Some(month) {
            self.month = Some(month);
            self.month_nanousd = 0;
            self.month_requests = 0;
        }
    }
}

/// A user's standing, for their account page and the API.
#[derive(Debug, Clone)]
pub struct Standing {
    pub caps: Caps,
    pub day_nanousd: i64,
    pub month_nanousd: i64,
    pub day_requests: u64,
    pub month_requests: u64,
    pub day_resets_at: DateTime<Utc>,
    pub month_resets_at: DateTime<Utc>,
}

pub struct Budgets {
    store: Arc<dyn Store>,
    audit: Audit,
    defaults: HashMap<Role, Caps>,
    overrides: Mutex<HashMap<Uuid, BudgetOverride>>,
    ledgers: Arc<Mutex<HashMap<Uuid, Ledger>>>,
}

/// The money held for a running request; dropping it releases the hold.
pub struct Reservation {
    ledgers: Arc<Mutex<HashMap<Uuid, Ledger>>>,
    user_id: Uuid,
    nanousd: i64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ledger) = self.ledgers.lock().get_mut(&self.user_id) {
            ledger.reserved_nanousd = (ledger.reserved_nanousd - self.nanousd).max(0);
        }
    }
}

/// This month's and today's spend per user, as stored.
async fn stored_spend(store: &dyn Store, now: DateTime<Utc>) -> Result<(Vec<Spend>, Vec<Spend>), StoreError> {
    Ok((
        store.spend_since(month_start(now)).await?,
        store.spend_since(day_start(now)).await?,
    ))
}

fn fold_stored(ledgers: &mut HashMap<Uuid, Ledger>, month: &[Spend], day: &[Spend], now: DateTime<Utc>) {
    for spend in month {
        let ledger = ledgers.entry(spend.user_id).or_default();
        ledger.roll(now);
        ledger.month_nanousd = ledger.month_nanousd.max(spend.cost_nanousd);
        ledger.month_requests = ledger.month_requests.max(spend.requests);
    }
    for spend in day {
        let ledger = ledgers.entry(spend.user_id).or_default();
        ledger.roll(now);
        ledger.day_nanousd = ledger.day_nanousd.max(spend.cost_nanousd);
        ledger.day_requests = ledger.day_requests.max(spend.requests);
    }
}

async fn stored_overrides(store: &dyn Store) -> Result<HashMap<Uuid, BudgetOverride>, StoreError> {
    Ok(store
        .budget_overrides()
        .await?
        .into_iter()
        .map(|o| (o.user_id, o))
        .collect())
}

fn next_day(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive().succ_opt().unwrap_or(now.date_naive());
    Utc.from_utc_datetime(&tomorrow.and_hms_opt(0, 0, 0).unwrap_or_default())
}

fn next_month(now: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(now)
}

fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default())
}

impl Budgets {
    /// Loads overrides and this month's and today's spend from the store.
    pub async fn load(
        store: Arc<dyn Store>,
        audit: Audit,
        defaults: HashMap<Role, Caps>,
    ) -> Result<Self, StoreError> {
        let now = Utc::now();
        let overrides = stored_overrides(store.as_ref()).await?;
        let mut ledgers: HashMap<Uuid, Ledger> = HashMap::new();
        let (month, day) = stored_spend(store.as_ref(), now).await?;
        fold_stored(&mut ledgers, &month, &day, now);
        Ok(Budgets {
            store,
            audit,
            defaults,
            overrides: Mutex::new(overrides),
            ledgers: Arc::new(Mutex::new(ledgers)),
        })
    }

    /// Takes in the spend other instances have recorded: each figure becomes the
    /// larger of this instance's count and the store's. Spend elsewhere since the
    /// last refresh is the only thing not yet counted.
    pub async fn refresh_spend(&self) -> Result<(), StoreError> {
        let now = Utc::now();
        let (month, day) = stored_spend(self.store.as_ref(), now).await?;
        fold_stored(&mut self.ledgers.lock(), &month, &day, now);
        Ok(())
    }

    /// Reloads every override from the store (changed by another instance).
    pub async fn reload_overrides(&self) -> Result<(), StoreError> {
        let fresh = stored_overrides(self.store.as_ref()).await?;
        *self.overrides.lock() = fresh;
        Ok(())
    }

    /// The caps a role has by default (from the configuration).
    pub fn role_default(&self, role: Role) -> Caps {
        self.defaults.get(&role).copied().unwrap_or_default()
    }

    pub fn caps(&self, user_id: Uuid, role: Role) -> Caps {
        let default = self.role_default(role);
        match self.overrides.lock().get(&user_id) {
            Some(o) => Caps {
                daily_nanousd: o.daily_nanousd.or(default.daily_nanousd),
                monthly_nanousd: o.monthly_nanousd.or(default.monthly_nanousd),
                daily_requests: o.daily_requests.or(default.daily_requests),
                monthly_requests: o.monthly_requests.or(default.monthly_requests),
            },
            None => default,
        }
    }

    /// The admin's override for a user, if any.
    pub fn override_of(&self, user_id: Uuid) -> Option<BudgetOverride> {
        self.overrides.lock().get(&user_id).cloned()
    }

    /// Sets a user's caps; `actor` is the admin (`None` from the command line).
    pub async fn set_override(
        &self,
        budget: BudgetOverride,
        actor: Option<Uuid>,
        origin: &Origin,
    ) -> Result<(), StoreError> {
        self.store.set_budget_override(&budget, Utc::now()).await?;
        self.audit
            .record(Entry {
                event: Event::BudgetChanged,
                user_id: Some(budget.user_id),
                actor_id: actor,
                origin,
                details: serde_json::json!({
                    "daily_nanousd": budget.daily_nanousd,
                    "monthly_nanousd": budget.monthly_nanousd,
                    "daily_requests": budget.daily_requests,
                    "monthly_requests": budget.monthly_requests,
                }),
            })
            .await;
        let empty = budget
            == BudgetOverride {
                user_id: budget.user_id,
                ..Default::default()
            };
        let mut overrides = self.overrides.lock();
        if empty {
            overrides.remove(&budget.user_id);
        } else {
            overrides.insert(budget.user_id, budget);
        }
        Ok(())
    }

    /// Checks the caps before a request and holds `estimate_nanousd` for it. A
    /// request is refused when nothing is left of a money cap (spent and held) or
    /// its request cap is reached.
    pub fn reserve(&self, user_id: Uuid, role: Role, estimate_nanousd: i64) -> Result<Reservation, Exceeded> {
        let caps = self.caps(user_id, role);
        let now = Utc::now();
        let mut ledgers = self.ledgers.lock();
        let ledger = ledgers.entry(user_id).or_default();
        ledger.roll(now);
        let money = |period: &'static str, spent: i64, cap: Option<i64>, resets: DateTime<Utc>| match cap {
            Some(cap) if spent + ledger.reserved_nanousd >= cap => Err(Exceeded {
                period,
                what: "spending",
                limit: format!("${:.2}", nanos_to_usd(cap)),
                remaining_usd: 0.0,
                resets_at: resets,
            }),
            _ => Ok(()),
        };
        money("daily", ledger.day_nanousd, caps.daily_nanousd, next_day(now))?;
        money(
            "monthly",
            ledger.month_nanousd,
            caps.monthly_nanousd,
            next_month(now),
        )?;
        let requests = |period: &'static str, used: u64, cap: Option<u64>, resets: DateTime<Utc>| match cap {
            Some(cap) if used >= cap => Err(Exceeded {
                period,
                what: "request",
                limit: format!("{cap} requests"),
                remaining_usd: 0.0,
                resets_at: resets,
            }),
            _ => Ok(()),
        };
        requests("daily", ledger.day_requests, caps.daily_requests, next_day(now))?;
        requests(
            "monthly",
            ledger.month_requests,
            caps.monthly_requests,
            next_month(now),
        )?;
        ledger.day_requests += 1;
        ledger.month_requests += 1;
        ledger.reserved_nanousd += estimate_nanousd;
        Ok(Reservation {
            ledgers: Arc::clone(&self.ledgers),
            user_id,
            nanousd: estimate_nanousd,
        })
    }

    /// Adds the real cost of a finished generation (fed by the usage recorder).
    pub fn spend(&self, user_id: Uuid, nanousd: i64) {
        let mut ledgers = self.ledgers.lock();
        let ledger = ledgers.entry(user_id).or_default();
        ledger.roll(Utc::now());
        ledger.day_nanousd += nanousd;
        ledger.month_nanousd += nanousd;
    }

    pub fn standing(&self, user_id: Uuid, role: Role) -> Standing {
        let now = Utc::now();
        let mut ledgers = self.ledgers.lock();
        let ledger = ledgers.entry(user_id).or_default();
        ledger.roll(now);
        Standing {
            caps: self.caps(user_id, role),
            day_nanousd: ledger.day_nanousd,
            month_nanousd: ledger.month_nanousd,
            day_requests: ledger.day_requests,
            month_requests: ledger.month_requests,
            day_resets_at: next_day(now),
            month_resets_at: next_month(now),
        }
    }
}

/// USD amounts from the configuration.
pub fn caps_from_usd(
    daily: Option<f64>,
    monthly: Option<f64>,
    daily_requests: Option<u64>,
    monthly_requests: Option<u64>,
) -> Caps {
    Caps {
        daily_nanousd: daily.map(usd_to_nanos),
        monthly_nanousd: monthly.map(usd_to_nanos),
        daily_requests,
        monthly_requests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_the_next_utc_midnight_and_first_of_month() {
        let t = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 30, 0)
            .single()
            .expect("time");
        assert_eq!(
            next_day(t),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).single().expect("time")
        );
        assert_eq!(
            next_month(t),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).single().expect("time")
        );
        assert_eq!(
            month_start(t),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single().expect("time")
        );
        let mut ledger = Ledger {
            day_nanousd: 5,
            month_nanousd: 9,
            ..Ledger::default()
        };
        ledger.roll(t);
        assert_eq!(
            (ledger.day_nanousd, ledger.month_nanousd),
            (0, 0),
            "a fresh ledger starts today"
        );
        ledger.day_nanousd = 5;
        ledger.month_nanousd = 9;
        ledger.roll(t + chrono::Duration::hours(1));
        assert_eq!(
            (ledger.day_nanousd, ledger.month_nanousd),
            (0, 0),
            "a new day in a new month"
        );
    }
}
