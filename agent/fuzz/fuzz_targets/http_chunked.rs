#![no_main]
//! Harness and invariants: `sloguard::fuzz::chunked`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sloguard::fuzz::chunked(data));
