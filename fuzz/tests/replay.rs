//! Replays `corpus/<target>/` and `artifacts/regressions/<target>/` through the fuzz target
//! functions on stable, so CI checks every input libFuzzer ever kept without a nightly
//! toolchain. Run with `cargo test --manifest-path fuzz/Cargo.toml --locked`.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// Regression inputs that still crash product code, as `target/file name`. Each one fails
/// loudly once fixed, so that it leaves this list and becomes an ordinary regression test.
const KNOWN_FAILURES: &[&str] = &[];

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = inputs(&root.join("corpus").join(target));
    assert!(!corpus.is_empty(), "corpus/{target} is empty");
    let regressions = inputs(&root.join("artifacts/regressions").join(target));
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = match fs::read(path) {
            Ok(data) => data,
            // A `just fuzz` running meanwhile replaces corpus files as it reduces them.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let name = format!(
            "{target}/{}",
            path.file_name().expect("file name").to_string_lossy()
        );
        let known = KNOWN_FAILURES.contains(&name.as_str());
        let outcome = panic::catch_unwind(|| run(&data));
        match (outcome.is_err(), known) {
            (true, false) => failures.push(format!("{} panics", path.display())),
            (false, true) => failures.push(format!(
                "{name} no longer panics: remove it from KNOWN_FAILURES in fuzz/tests/replay.rs"
            )),
            (true, true) => eprintln!("known failure still panics: {name}"),
            (false, false) => {}
        }
    }
    eprintln!(
        "{target}: replayed {} corpus and {} regression inputs",
        corpus.len(),
        regressions.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn protobuf_corpus() {
    replay("protobuf", omemo_fuzz::protobuf);
}

#[test]
fn decrypt_corpus() {
    replay("decrypt", omemo_fuzz::decrypt);
}

#[test]
fn pep_xml_corpus() {
    replay("pep_xml", omemo_fuzz::pep_xml);
}

#[test]
fn bookmarks_corpus() {
    replay("bookmarks", omemo_fuzz::bookmarks);
}

#[test]
fn sync_corpus() {
    replay("sync", omemo_fuzz::sync);
}

/// The seed messages decrypt against the live pair (the target would otherwise only ever
/// exercise the failure paths).
#[test]
fn seeds_decrypt() {
    let seeds = omemo_fuzz::decrypt_seeds();
    assert!(seeds.len() > 6);
    for (name, bytes) in seeds {
        omemo_fuzz::decrypt(&bytes);
        if name.starts_with("alice-to-bob") || name.starts_with("bob-to-alice") {
            assert!(omemo_fuzz::decrypts_once(&bytes), "{name} does not decrypt");
        }
    }
}
