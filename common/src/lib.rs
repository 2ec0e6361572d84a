//! Runtime pieces shared by `faena-master` and `faena-worker`.
//!
//! - [`broker`]: broker URLs, connection options and the reconnecting event loop.
//! - [`logs`]: tracing set-up, with every log event also published on the logs topic.
//! - [`secrets`]: secrets from a value or a `*_FILE` path (Docker secrets).
//! - [`shutdown`]: waiting for Ctrl-C or SIGTERM.

pub mod broker;
pub mod logs;
pub mod secrets;
pub mod shutdown;
