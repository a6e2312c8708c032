//! Authentication building blocks: password hashing and policy, access tokens,
//! refresh tokens, the in-memory revocation check, login throttling, and the
//! request extractors that put them together.

pub mod extract;
pub mod jwt;
pub mod password;
pub mod policy;
pub mod refresh;
pub mod revocation;
pub mod throttle;
