//! libFuzzer entry point; the checks are in [`bosh_fuzz::manifest`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bosh_fuzz::manifest(data));
