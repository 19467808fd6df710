//! libFuzzer entry point for [`omemo_fuzz::sync`]; the corpus is `fuzz/corpus/sync/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| omemo_fuzz::sync(data));
