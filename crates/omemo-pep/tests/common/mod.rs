//! Helpers shared by the integration tests.
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]
// Not every test binary uses every helper.
#![allow(dead_code)]

use xmpp_parsers::minidom::Element;

/// Reads a vector file from `tests/vectors/`.
pub(crate) fn vectors(file: &str) -> serde_json::Value {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The string at `vectors.<a>.<b>…`.
pub(crate) fn field<'a>(json: &'a serde_json::Value, path: &[&str]) -> &'a str {
    let mut v = &json["vectors"];
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap()
}

/// Parses an XML literal, dropping whitespace between tags (pretty-printed XEP examples).
pub(crate) fn xml(text: &str) -> Element {
    let mut out = String::with_capacity(text.len());
    let mut pending = String::new();
    let mut after_tag = false;
    for c in text.chars() {
        if after_tag && c.is_whitespace() {
            pending.push(c);
            continue;
        }
        if c == '<' {
            pending.clear();
        } else {
            out.push_str(&pending);
            pending.clear();
        }
        after_tag = c == '>';
        out.push(c);
    }
    out.trim().parse().unwrap()
}

/// Reads a legacy vector file from `tests/legacy-vectors/`.
pub(crate) fn legacy_vectors(file: &str) -> serde_json::Value {
    let path = format!("{}/tests/legacy-vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["namespace"], "eu.siacs.conversations.axolotl");
    json
}

/// Decodes a hex field at `vectors.<a>.<b>…`.
pub(crate) fn hex_field(json: &serde_json::Value, path: &[&str]) -> Vec<u8> {
    hex::decode(field(json, path)).unwrap()
}
