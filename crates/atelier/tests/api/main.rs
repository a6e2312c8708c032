//! HTTP tests of atelier: the real server on 127.0.0.1:0, a temporary DuckDB file
//! (or, for `cluster`, real processes on a fresh PostgreSQL database), a real HTTP
//! client. One test binary for the crate keeps link time down.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod admin;
mod auth;
mod budgets;
mod cluster;
mod dbcopy;
mod docs;
mod generation;
mod helpers;
mod keys;
mod limits;
mod process;
mod routing;
mod s3;
mod studio;
mod users;
mod v1;
mod video;
