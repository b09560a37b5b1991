//! libFuzzer entry point; the checks are in [`bosh_fuzz::release_tarball`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bosh_fuzz::release_tarball(data));
