#![no_main]
//! Harness and invariants: `sloguard::fuzz::config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sloguard::fuzz::config(data));
