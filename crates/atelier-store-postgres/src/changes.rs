//! The change feed between instances: `NOTIFY` in the transaction that makes a
//! change (so it is sent if and only if the change commits), `LISTEN` on a
//! connection of each instance's pool.

use atelier_store::{Change, ChangeFeed, StoreResult};
use sqlx::PgConnection;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use crate::sql;

/// The notification channel of atelier's changes.
const CHANNEL: &str = "atelier_changes";

/// Changes waiting for the instance to apply them; a full feed drops the listener's
/// excess and asks for a resync instead of growing without bound.
const FEED_CAPACITY: usize = 4_096;

/// Queues the change for delivery when the caller's transaction commits.
pub(crate) async fn notify(tx: &mut PgConnection, change: Change) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(change.to_string())
        .execute(&mut *tx)
        .await
        .map(drop)
        .map_err(sql::err)
}

/// Listens on a connection of the pool until the pool closes or the feed's receiver
/// is dropped. After a lost connection the listener reconnects and the feed says
/// [`Change::Resync`]: notifications sent meanwhile are gone.
pub(crate) async fn listen(pool: &PgPool) -> StoreResult<ChangeFeed> {
    let mut listener = PgListener::connect_with(pool).await.map_err(sql::err)?;
    listener.listen(CHANNEL).await.map_err(sql::err)?;
    let (feed, receiver) = mpsc::channel(FEED_CAPACITY);
    tokio::spawn(async move {
        loop {
            let change = match listener.try_recv().await {
                Ok(Some(notification)) => match notification.payload().parse::<Change>() {
                    Ok(change) => change,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring an unknown change notification");
                        continue;
                    }
                },
                Ok(None) => {
                    tracing::warn!("the change feed's database connection was lost; reconnecting");
                    Change::Resync
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "the change feed cannot reach the database; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            let sent = match feed.try_send(change) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => feed.send(Change::Resync).await,
                Err(mpsc::error::TrySendError::Closed(c)) => Err(mpsc::error::SendError(c)),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}
