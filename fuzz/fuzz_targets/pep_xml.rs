//! libFuzzer entry point for [`omemo_fuzz::pep_xml`]; the corpus is `fuzz/corpus/pep_xml/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| omemo_fuzz::pep_xml(data));
