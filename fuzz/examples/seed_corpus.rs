//! Writes the seed corpora into `fuzz/corpus/<target>/` from the test vectors and fixtures:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`. Idempotent (files are
//! named by content); run `just fuzz-cmin`-style minimization afterwards if it grows.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vectors(rel: &str) -> Value {
    let text = fs::read_to_string(root().join(rel)).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["vectors"].clone()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn main() {
    // protobuf + decrypt: every serialized message of the ratchet vectors.
    let ratchet = vectors("crates/omemo-crypto/tests/vectors/ratchet.json");
    for (msg, fields) in ratchet.as_object().unwrap() {
        let Some(fields) = fields.as_object() else {
            continue;
        };
        for field in [
            "omemo_key_exchange",
            "omemo_authenticated_message",
            "omemo_message",
            "omemo_message_header_only",
        ] {
            if let Some(hex_text) = fields.get(field).and_then(Value::as_str) {
                let bytes = hex::decode(hex_text).unwrap();
                write("protobuf", &format!("{msg}-{field}"), &bytes);
                if field == "omemo_key_exchange" || field == "omemo_authenticated_message" {
                    write("decrypt", &format!("vector-{msg}-{field}"), &bytes);
                }
            }
        }
    }
    // protobuf: every legacy message of the legacy ratchet vectors.
    let legacy = vectors("crates/omemo-crypto/tests/legacy-vectors/ratchet.json");
    for (msg, fields) in legacy.as_object().unwrap() {
        let Some(fields) = fields.as_object() else {
            continue;
        };
        for field in [
            "whisper_message",
            "pre_key_whisper_message",
            "pre_key_whisper_message_with_registration_id",
        ] {
            if let Some(hex_text) = fields.get(field).and_then(Value::as_str) {
                let bytes = hex::decode(hex_text).unwrap();
                write("protobuf", &format!("legacy-{msg}-{field}"), &bytes);
            }
        }
    }
    // decrypt: messages valid against the live pair, and scripts.
    for (name, bytes) in omemo_fuzz::decrypt_seeds() {
        write("decrypt", &name, &bytes);
        if !bytes.starts_with(&[omemo_fuzz::SCRIPT_MAGIC]) {
            write("protobuf", &format!("live-{name}"), &bytes);
        }
    }
    // protobuf: a session snapshot (Session::restore is fuzzed there too).
    write("protobuf", "session-snapshot", &omemo_fuzz::live_snapshot());
    write(
        "protobuf",
        "legacy-session-snapshot",
        &omemo_fuzz::legacy_live_snapshot(),
    );

    // pep_xml: the XML vectors of both crates and the SCE envelope of the payload vector.
    for (rel, prefix) in [
        ("crates/omemo-pep/tests/vectors/xml.json", ""),
        ("crates/omemo-crypto/tests/vectors/xml.json", ""),
        ("crates/omemo-pep/tests/legacy-vectors/xml.json", "legacy-"),
    ] {
        for (name, xml) in vectors(rel).as_object().unwrap() {
            if let Some(xml) = xml.as_str().filter(|x| x.starts_with('<')) {
                write("pep_xml", &format!("{prefix}{name}"), xml.as_bytes());
            }
        }
    }
    let payload = vectors("crates/omemo-crypto/tests/vectors/payload.json");
    write(
        "pep_xml",
        "sce-envelope",
        payload["plaintext_utf8"].as_str().unwrap().as_bytes(),
    );

    // bookmarks: every fixture, plus a mozLz4 wrap of the Firefox backup.
    let fixtures = root().join("apps/sync-client/tests/fixtures");
    for entry in fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "firefox-backup.json" {
            let mut lz4 = b"mozLz40\0".to_vec();
            lz4.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_le_bytes());
            lz4.extend_from_slice(&lz4_flex::block::compress(&bytes));
            write("bookmarks", "firefox-backup.jsonlz4", &lz4);
        }
        write("bookmarks", &name, &bytes);
    }
    // sync: the fixtures and Chromium's own small file as recorded files (modes 1 and 3), and
    // pairs of states (mode 0).
    let chromium = root().join("crates/bookmarks/tests/fixtures/small.Bookmarks");
    let mut files: Vec<PathBuf> = fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(chromium);
    files.sort();
    for path in &files {
        let bytes = fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        for mode in [1u8, 3] {
            let mut input = vec![mode];
            input.extend_from_slice(&bytes);
            write("sync", &format!("{name}-mode{mode}"), &input);
        }
    }
    {
        use bookmarks::sync::{record, State};
        use rand_chacha::ChaCha20Rng;
        use rand_core::SeedableRng;
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (format, tree) =
            bookmarks::import_file(&fixtures.join("firefox-backup.json"), None).unwrap();
        let base = record(&State::default(), &tree, format, 1, &mut rng).unwrap();
        let mut smaller = tree.clone();
        smaller.roots.remove(0);
        let other = record(&base, &smaller, format, 2, &mut rng).unwrap();
        for (name, a, b) in [
            ("base-other", &base, &other),
            ("empty-base", &State::default(), &base),
        ] {
            let mut input = vec![0u8];
            input.extend_from_slice(&a.to_json().unwrap());
            input.push(0);
            input.extend_from_slice(&b.to_json().unwrap());
            write("sync", &format!("states-{name}"), &input);
        }
    }
    let tree = bookmarks::import_file(&fixtures.join("firefox-backup.json"), None)
        .unwrap()
        .1;
    write(
        "bookmarks",
        "canonical.json",
        &tree.to_canonical_json().unwrap(),
    );
}
