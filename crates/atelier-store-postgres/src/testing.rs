//! Throw-away databases on a real PostgreSQL server, for tests.
//!
//! The server is `ATELIER_TEST_POSTGRES_URL` (default: the machine's
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each [`FreshDatabase`] is a new,
//! empty database with a unique name, dropped (with its connections) when the value
//! is dropped.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Prefix of every database these helpers create, so leftovers are easy to spot.
pub const PREFIX: &str = "atelier_test_";

/// URL of the maintenance database on the test server.
pub fn server_url() -> String {
    std::env::var("ATELIER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
}

pub struct FreshDatabase {
    name: String,
    url: String,
}

impl FreshDatabase {
    /// Creates an empty database. Fails if the test server cannot be reached.
    pub async fn create() -> Result<Self, sqlx::Error> {
        let server = server_url();
        let name = format!("{PREFIX}{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&server).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = PgConnectOptions::from_str(&server)?
            .database(&name)
            .to_url_lossy()
            .to_string();
        Ok(FreshDatabase { name, url })
    }

    /// `postgres://…/<this database>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for FreshDatabase {
    /// Drops the database from a thread of its own: `Drop` cannot await, and the
    /// test's runtime may be shutting down.
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&server_url()).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropped.join();
    }
}
