//! Helpers shared by the JSON importers (Falkon, Chromium, Firefox).

use serde_json::{Map, Value};

use super::error::{json_syntax, ImportError};
use super::model::Extra;
use super::{Format, MAX_DEPTH};

/// Parses `bytes` as JSON; syntax errors carry line and column.
pub(super) fn parse(format: Format, bytes: &[u8]) -> Result<Value, ImportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(bytes).map_err(|e| json_syntax(format, &e))
}

pub(super) fn structure(format: Format, path: &str, message: impl Into<String>) -> ImportError {
    ImportError::Structure {
        format,
        path: if path.is_empty() {
            "top level".to_owned()
        } else {
            path.to_owned()
        },
        message: message.into(),
    }
}

pub(super) fn check_depth(format: Format, depth: usize) -> Result<(), ImportError> {
    if depth > MAX_DEPTH {
        Err(ImportError::TooDeep {
            format,
            limit: MAX_DEPTH,
        })
    } else {
        Ok(())
    }
}

/// Expects an object.
pub(super) fn object(
    format: Format,
    path: &str,
    value: Value,
) -> Result<Map<String, Value>, ImportError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(structure(
            format,
            path,
            format!("expected an object, found {}", kind(&other)),
        )),
    }
}

/// Removes `key` when it is a string and returns it; anything else stays in the map.
pub(super) fn take_string(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key) {
        Some(Value::String(_)) => match map.remove(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// Like [`take_string`], but an empty string is removed and read as absent.
pub(super) fn take_nonempty(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    take_string(map, key).filter(|s| !s.is_empty())
}

/// Removes `key` when it is an integer and returns it; anything else stays in the map.
pub(super) fn take_i64(map: &mut Map<String, Value>, key: &str) -> Option<i64> {
    let value = map.get(key)?.as_i64()?;
    map.remove(key);
    Some(value)
}

/// Removes `key` when it is an array of objects and returns them.
pub(super) fn take_children(
    format: Format,
    path: &str,
    map: &mut Map<String, Value>,
) -> Result<Option<Vec<Map<String, Value>>>, ImportError> {
    let Some(value) = map.remove("children") else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(structure(
            format,
            &format!("{path}/children"),
            format!("expected an array, found {}", kind(&value)),
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| object(format, &format!("{path}/children/{i}"), item))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

pub(super) fn into_extra(map: Map<String, Value>) -> Extra {
    map.into_iter().collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
