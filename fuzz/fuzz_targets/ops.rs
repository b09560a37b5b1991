//! libFuzzer entry point; the checks are in [`bosh_fuzz::ops`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bosh_fuzz::ops(data));
