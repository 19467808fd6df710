//! libFuzzer entry point for [`omemo_fuzz::bookmarks`]; the corpus is `fuzz/corpus/bookmarks/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| omemo_fuzz::bookmarks(data));
