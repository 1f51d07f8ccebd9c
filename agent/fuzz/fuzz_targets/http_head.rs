#![no_main]
//! Harness and invariants: `sloguard::fuzz::head`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sloguard::fuzz::head(data));
