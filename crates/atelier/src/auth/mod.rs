//! Authentication building blocks: password hashing and policy, access tokens,
//! refresh tokens, signed media links, the in-memory revocation check, login throttling, and the
//! request extractors that put them together.

pub mod extract;
pub mod jwt;
pub mod media_url;
pub mod password;
pub mod policy;
pub mod refresh;
pub mod revocation;
pub mod throttle;
