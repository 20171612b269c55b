//! The daemon: lifecycle (load, attach, tick, signals, shutdown).

pub mod api;
pub mod detect;
pub mod kernel;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod run;
