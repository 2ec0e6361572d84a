//! Runtime pieces shared by `faena-master` and `faena-worker`.
//!
//! - [`args`]: flag groups both binaries take (broker credentials, cluster token).
//! - [`bucket`]: the token bucket behind every rate limit, time passed in.
//! - [`broker`]: broker URLs, connection options and the reconnecting event loop.
//! - [`logs`]: tracing set-up, with every log event also published on the logs topic.
//! - [`secrets`]: secrets from a value or a `*_FILE` path (Docker secrets).
//! - [`signing`]: the live configuration's signature (HMAC from the cluster token).
//! - [`lifecycle`]: the ready line, and shutdown on Ctrl-C or SIGTERM.
//! - [`retry`]: the one backoff policy every reconnect and retry loop uses.
//! - [`tls`]: TLS between nodes: trusted CA, served certificate.

pub mod args;
pub mod broker;
pub mod bucket;
pub mod lifecycle;
pub mod logs;
pub mod retry;
pub mod secrets;
pub mod signing;
pub mod tls;
