#![no_main]
//! Harness and invariants: `sloguard::fuzz::stream`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sloguard::fuzz::stream(data));
