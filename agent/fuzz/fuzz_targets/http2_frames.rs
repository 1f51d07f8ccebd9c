#![no_main]
//! Harness and invariants: `sloguard::fuzz::http2_frames`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sloguard::fuzz::http2_frames(data));
