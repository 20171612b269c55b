//! The daemon: lifecycle (load, attach, tick, signals, shutdown).

pub mod detect;
pub mod policy;
