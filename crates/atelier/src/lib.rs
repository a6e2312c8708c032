//! atelier: a self-hosted AI generation studio and gateway in one binary.
//!
//! `main.rs` only calls [`cli::main`]. The layers, from the outside in: [`cli`] and
//! [`api`] (HTTP) parse and authorize, [`service`] does the work, and the store
//! (`atelier-store`) keeps the state. [`app`] builds and serves it all.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dbcopy;
pub mod error;
pub mod http1;
pub mod memory;
pub mod openai;
pub mod runtime;
pub mod service;
pub mod sys;
pub mod telemetry;
pub mod web;
