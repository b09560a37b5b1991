//! libFuzzer entry point; the checks are in [`bosh_fuzz::agent_message`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bosh_fuzz::agent_message(data));
