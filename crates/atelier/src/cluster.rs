//! Keeping this instance's memory in step with other instances on one database.
//!
//! Tokens, keys, budgets and the allow-list are checked in memory. When the store
//! can have other writers (PostgreSQL), it hands out a feed of committed changes;
//! this task reloads from the store whatever each change names. A change made here
//! comes back through the feed too, and reloading it again is harmless. Spend
//! against budgets is not notified (it changes with every request); it is taken in
//! from the store every few seconds instead.

use std::time::Duration;

use atelier_store::{Change, ChangeFeed};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppState;

/// Follows the store's change feed, if it has one, until `stop`.
pub async fn follow(state: AppState, tracker: &TaskTracker, stop: CancellationToken) -> anyhow::Result<bool> {
    let Some(feed) = state.store.changes().await? else {
        return Ok(false);
    };
    tracker.spawn(run(state, feed, stop));
    Ok(true)
}

/// How often other instances' spend is taken into the budgets.
const SPEND_REFRESH: Duration = Duration::from_secs(5);

async fn run(state: AppState, mut feed: ChangeFeed, stop: CancellationToken) {
    // What changed between loading the caches and listening is not in the feed.
    apply(&state, Change::Resync).await;
    let mut spend = tokio::time::interval(SPEND_REFRESH);
    spend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = spend.tick() => {
                if let Err(e) = state.budgets.refresh_spend().await {
                    tracing::warn!(error = %e, "cannot take in other instances' spend");
                }
            }
            change = feed.recv() => match change {
                Some(change) => apply(&state, change).await,
                None => {
                    tracing::warn!("the change feed has ended; other instances' changes are no longer seen");
                    return;
                }
            },
        }
    }
}

async fn apply(state: &AppState, change: Change) {
    tracing::debug!(%change, "applying a change");
    let result: anyhow::Result<()> = async {
        match &change {
            Change::User(id) => {
                state.accounts.reload_user(*id).await?;
                state.keys.reload_user(*id).await?;
            }
            Change::SessionEnded(family) => state.accounts.session_ended(*family),
            Change::ApiKeys(user) => state.keys.reload_user(*user).await?,
            Change::Budget(_) => state.budgets.reload_overrides().await?,
            Change::Setting(_) => state
                .catalog
                .reload_allowed()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            Change::Resync => {
                state.accounts.reload_users().await?;
                state.keys.reload_all().await?;
                state.budgets.reload_overrides().await?;
                state
                    .catalog
                    .reload_allowed()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(%change, error = %e, "cannot apply a change from another instance");
    }
}
