//! faena-master: takes jobs, keeps them durable, hands them to workers.
pub mod engine;
pub mod store;
pub mod queue;
pub mod scheduler;
