#![no_main]
//! Harness and invariants: `sloguard::fuzz::events`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sloguard::fuzz::events(data));
