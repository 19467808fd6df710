//! libFuzzer entry point for [`omemo_fuzz::protobuf`]; the corpus is `fuzz/corpus/protobuf/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| omemo_fuzz::protobuf(data));
