#![no_main]
//! Harness and invariants: `sloguard::fuzz::trace_headers`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sloguard::fuzz::trace_headers(data));
