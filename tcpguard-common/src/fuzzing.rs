//! Time-bounded property fuzzing (proptest) for the host-side tests.
//!
//! [`fuzz_for`] runs a property on fresh random inputs until its time budget
//! is spent: `TCPGUARD_FUZZ_SECS` seconds per target (default 5, which the
//! test command uses; `cargo xtask fuzz --secs N` runs longer). A failure is
//! shrunk to a minimal input and reported with it.

use std::time::{Duration, Instant};

use proptest::{
    strategy::Strategy,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner},
};

/// Seconds each fuzz target runs for.
pub fn budget() -> Duration {
    let secs = std::env::var("TCPGUARD_FUZZ_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(5.0);
    Duration::from_secs_f64(secs.max(0.1))
}

/// Run `prop` on inputs from `strategy` in batches of fresh random seeds
/// until the budget is spent; panic with the shrunk input on a failure.
/// Returns the number of inputs tried (so a test can assert it ran).
pub fn fuzz_for<S: Strategy>(name: &str, strategy: S, prop: impl Fn(S::Value) -> Result<(), TestCaseError>) -> u64
where
    S::Value: std::fmt::Debug,
{
    let start = Instant::now();
    let budget = budget();
    let batch = 2_000;
    let mut tried = 0u64;
    while start.elapsed() < budget {
        let cfg = Config {
            cases: batch,
            failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
            max_shrink_iters: 10_000,
            ..Config::default()
        };
        // A fresh OS-seeded generator each batch.
        let mut runner = TestRunner::new(cfg);
        match runner.run(&strategy, &prop) {
            Ok(()) => tried += u64::from(batch),
            Err(TestError::Fail(why, input)) => {
                panic!("fuzz target {name} failed after {tried} inputs: {why}\nminimal input: {input:#?}")
            }
            Err(TestError::Abort(why)) => panic!("fuzz target {name} aborted: {why}"),
        }
    }
    eprintln!("fuzz target {name}: {tried} inputs in {:.1} s", start.elapsed().as_secs_f64());
    tried
}
