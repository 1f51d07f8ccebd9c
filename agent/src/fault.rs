//! Faults the integration tests arm to prove the agent notices its own
//! failures. Compiled in only with the `fault-injection` feature, which only
//! the `tests` crate enables: `cargo xtask run`, `cargo xtask build` and the
//! image build `-p agent` alone, so release binaries have none of this.

/// Env var naming a file: once it exists, the pipeline thread panics.
pub const PIPELINE_PANIC_ENV: &str = "SG_FAULT_PIPELINE_PANIC";

/// True when the test armed `env` and created the trigger file it names.
#[cfg(any(test, feature = "fault-injection"))]
pub fn triggered(env: &str) -> bool {
    std::env::var_os(env).is_some_and(|p| std::path::Path::new(&p).exists())
}

#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub fn triggered(_env: &str) -> bool {
    false
}

/// Whether this binary carries fault injection (`sloguard --version` does not
/// say; the tests ask through `cargo tree`, see tests/tests/agent_health.rs).
pub const ENABLED: bool = cfg!(feature = "fault-injection");
