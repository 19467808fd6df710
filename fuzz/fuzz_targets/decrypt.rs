//! libFuzzer entry point for [`omemo_fuzz::decrypt`]; the corpus is `fuzz/corpus/decrypt/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| omemo_fuzz::decrypt(data));
