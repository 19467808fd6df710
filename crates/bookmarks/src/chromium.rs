//! Chromium `Bookmarks` and Falkon `bookmarks.json`: the same shape (`roots` of typed nodes
//! with `name`, `url`, `children`), different fields.

use std::collections::HashSet;

use md5::{Digest, Md5};
use serde_json::{Map, Value};

use super::error::ImportError;
use super::json_source::{
    check_depth, into_extra, object, parse, structure, take_children, take_nonempty, take_string,
};
use super::model::{Bookmark, BookmarkTree, Folder, FolderRole, Node, Separator};
use super::Format;

/// Microseconds between 1601-01-01 (the WebKit/Windows epoch Chromium uses) and 1970-01-01.
const WEBKIT_EPOCH_OFFSET_US: i64 = 11_644_473_600_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Chromium,
    Falkon,
}

impl Dialect {
    fn format(self) -> Format {
        match self {
            Dialect::Chromium => Format::Chromium,
            Dialect::Falkon => Format::Falkon,
        }
    }
}

/// Root keys in the order they are listed; unknown roots follow, sorted.
const KNOWN_ROOTS: [(&str, FolderRole); 4] = [
    ("bookmark_bar", FolderRole::Toolbar),
    ("bookmark_menu", FolderRole::Menu),
    ("other", FolderRole::Other),
    ("synced", FolderRole::Mobile),
];

pub(super) fn import(bytes: &[u8], dialect: Dialect) -> Result<BookmarkTree, ImportError> {
    let format = dialect.format();
    let mut top = object(format, "", parse(format, bytes)?)?;
    let roots = match top.remove("roots") {
        Some(roots) => object(format, "/roots", roots)?,
        None => return Err(structure(format, "", "no \"roots\" object")),
    };
    let mut roots: Vec<(String, Value)> = roots.into_iter().collect();
    roots.sort_by_key(|(key, _)| {
        let known = KNOWN_ROOTS.iter().position(|(k, _)| k == key);
        (known.unwrap_or(KNOWN_ROOTS.len()), key.clone())
    });
    let mut nodes = Vec::with_capacity(roots.len());
    for (key, value) in roots {
        let path = format!("/roots/{key}");
        let map = object(format, &path, value)?;
        let mut node = read_node(dialect, &path, map, 1)?;
        if let Node::Folder(folder) = &mut node {
            match KNOWN_ROOTS.iter().find(|(k, _)| *k == key) {
                Some((_, role)) => folder.role = Some(*role),
                None => {
                    folder.extra.insert("root".to_owned(), Value::String(key));
                }
            }
        }
        nodes.push(node);
    }
    Ok(BookmarkTree {
        roots: nodes,
        extra: into_extra(top),
    })
}

fn read_node(
    dialect: Dialect,
    path: &str,
    mut map: Map<String, Value>,
    depth: usize,
) -> Result<Node, ImportError> {
    let format = dialect.format();
    let kind = match map.get("type").and_then(Value::as_str) {
        Some("url") => Kind::Bookmark,
        Some("folder") => Kind::Folder,
        Some("separator") => Kind::Separator,
        Some(_) | None if map.contains_key("children") => Kind::Folder,
        Some(_) | None if map.contains_key("url") => Kind::Bookmark,
        Some(other) => {
            return Err(structure(
                format,
                &format!("{path}/type"),
                format!("unknown node type \"{}\"", other.escape_debug()),
            ))
        }
        None => return Err(structure(format, path, "node without \"type\"")),
    };
    if matches!(
        map.get("type").and_then(Value::as_str),
        Some("url" | "folder" | "separator")
    ) {
        map.remove("type");
    }
    Ok(match kind {
        Kind::Separator => Node::Separator(Separator {
            extra: into_extra(map),
        }),
        Kind::Bookmark => {
            let title = take_string(&mut map, "name").unwrap_or_default();
            let url = take_string(&mut map, "url").unwrap_or_default();
            let added = take_webkit_time(&mut map, "date_added");
            let modified = take_webkit_time(&mut map, "date_modified");
            let visited = take_webkit_time(&mut map, "date_last_used");
            let description = take_nonempty(&mut map, "description");
            let keyword = take_nonempty(&mut map, "keyword");
            Node::Bookmark(Bookmark {
                title,
                url,
                description,
                tags: Vec::new(),
                keyword,
                added,
                modified,
                visited,
                extra: into_extra(map),
            })
        }
        Kind::Folder => {
            check_depth(format, depth)?;
            let children = take_children(format, path, &mut map)?.unwrap_or_default();
            let mut nodes = Vec::with_capacity(children.len());
            for (i, child) in children.into_iter().enumerate() {
                let child_path = format!("{path}/children/{i}");
                nodes.push(read_node(dialect, &child_path, child, depth + 1)?);
            }
            let title = take_string(&mut map, "name").unwrap_or_default();
            let added = take_webkit_time(&mut map, "date_added");
            let modified = take_webkit_time(&mut map, "date_modified");
            let description = take_nonempty(&mut map, "description");
            Node::Folder(Folder {
                title,
                role: None,
                description,
                children: nodes,
                added,
                modified,
                extra: into_extra(map),
            })
        }
    })
}

enum Kind {
    Folder,
    Bookmark,
    Separator,
}

/// Reads a Chromium time (a decimal string of microseconds since 1601) as Unix microseconds.
/// `"0"` (never) is removed and read as absent; anything unreadable stays in the map.
fn take_webkit_time(map: &mut Map<String, Value>, key: &str) -> Option<i64> {
    let raw = map.get(key)?.as_str()?.parse::<i64>().ok()?;
    map.remove(key);
    if raw == 0 {
        None
    } else {
        raw.checked_sub(WEBKIT_EPOCH_OFFSET_US)
    }
}

/// The Chromium string for Unix microseconds.
pub(super) fn webkit_time(unix_us: i64) -> String {
    unix_us.saturating_add(WEBKIT_EPOCH_OFFSET_US).to_string()
}

/// Fixed GUIDs and ids of Chromium's permanent folders.
const CHROMIUM_ROOTS: [(&str, FolderRole, &str, &str, &str); 3] = [
    (
        "bookmark_bar",
        FolderRole::Toolbar,
        "0bc5d13f-2cba-5d74-951f-3f233fe6c908",
        "1",
        "Bookmarks bar",
    ),
    (
        "other",
        FolderRole::Other,
        "82b081ec-3dd3-529c-8475-ab6c344590dd",
        "2",
        "Other bookmarks",
    ),
    (
        "synced",
        FolderRole::Mobile,
        "4cf2e351-0e85-532b-bb37-df045d8f8d0f",
        "3",
        "Mobile bookmarks",
    ),
];

/// Whether Chromium keeps a bookmark with this URL: it silently drops bookmarks whose URL
/// does not parse (`GURL::is_valid`), so an export must not count on them. Conservative: a
/// scheme, and for the schemes with an authority, `//` and a host.
pub(crate) fn accepts_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || url.chars().any(|c| c.is_control()) {
        return false;
    }
    let authority = ["http", "https", "ftp", "ws", "wss"];
    if authority.iter().any(|a| scheme.eq_ignore_ascii_case(a)) {
        let Some(after) = rest.strip_prefix("//") else {
            return false;
        };
        let host = after
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .rsplit('@')
            .next()
            .unwrap_or_default();
        let host = host.split(':').next().unwrap_or_default();
        return !host.is_empty() && !host.contains(' ');
    }
    true
}

/// The fixed GUID Chromium gives a permanent folder.
pub(crate) fn root_guid(role: FolderRole) -> Option<&'static str> {
    CHROMIUM_ROOTS
        .iter()
        .find(|(_, r, ..)| *r == role)
        .map(|(_, _, guid, ..)| *guid)
}

fn root_key(dialect: Dialect, folder: &Folder) -> Option<String> {
    if let Some(Value::String(key)) = folder.extra.get("root") {
        return Some(key.clone());
    }
    match (folder.role?, dialect) {
        (FolderRole::Menu, Dialect::Chromium) => None,
        (role, _) => KNOWN_ROOTS
            .iter()
            .find(|(_, r)| *r == role)
            .map(|(k, _)| (*k).to_owned()),
    }
}

/// Exports a tree as Chromium `Bookmarks` (with its checksum) or Falkon `bookmarks.json`.
///
/// Chromium: the three permanent folders are always written (Chromium refuses a file without
/// them); a bookmarks menu and free top-level items are not written (Chromium has neither), nor
/// separators, descriptions, tags and keywords. Ids are kept where they are valid and unique,
/// others get the next free number. The output is formatted as Chromium formats it.
pub(super) fn export(tree: &BookmarkTree, dialect: Dialect) -> Vec<u8> {
    let mut roots = Map::new();
    let mut ids = Ids::new(tree);
    for node in &tree.roots {
        let Node::Folder(folder) = node else { continue };
        let Some(key) = root_key(dialect, folder) else {
            continue;
        };
        if roots.contains_key(&key) {
            continue;
        }
        let mut value = write_node(node, dialect, &mut ids);
        if let Value::Object(map) = &mut value {
            map.remove("root");
        }
        roots.insert(key, value);
    }
    let mut top: Map<String, Value> = tree.extra.clone().into_iter().collect();
    if dialect == Dialect::Chromium {
        for (key, role, guid, id, name) in CHROMIUM_ROOTS {
            if roots.contains_key(key) {
                continue;
            }
            let mut folder = Folder {
                title: name.to_owned(),
                role: Some(role),
                ..Folder::default()
            };
            folder
                .extra
                .insert("guid".to_owned(), Value::String(guid.to_owned()));
            folder
                .extra
                .insert("id".to_owned(), Value::String(id.to_owned()));
            roots.insert(
                key.to_owned(),
                write_node(&Node::Folder(folder), dialect, &mut ids),
            );
        }
        top.insert("checksum".to_owned(), Value::String(checksum(&roots)));
        // Chromium refuses any other version (and then overwrites the file with an empty one).
        top.insert("version".to_owned(), Value::from(1));
    }
    top.insert("roots".to_owned(), Value::Object(roots));
    let value = Value::Object(top);
    match dialect {
        Dialect::Chromium => {
            let mut out = String::new();
            write_chromium_json(&value, 0, &mut out);
            out.push('\n');
            out.into_bytes()
        }
        Dialect::Falkon => serde_json::to_vec_pretty(&value).unwrap_or_default(),
    }
}

/// Chromium ids: every node has a unique positive integer id.
struct Ids {
    used: HashSet<u64>,
    next: u64,
}

impl Ids {
    fn new(tree: &BookmarkTree) -> Self {
        let mut max = 4;
        let mut pending: Vec<&Node> = tree.roots.iter().collect();
        while let Some(node) = pending.pop() {
            let extra = match node {
                Node::Folder(f) => {
                    pending.extend(f.children.iter());
                    &f.extra
                }
                Node::Bookmark(b) => &b.extra,
                Node::Separator(s) => &s.extra,
            };
            if let Some(id) = extra
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
            {
                max = max.max(id);
            }
        }
        Ids {
            used: HashSet::new(),
            next: max.saturating_add(1),
        }
    }

    fn id(&mut self, wanted: Option<&Value>) -> String {
        if let Some(id) = wanted
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
        {
            if id > 0 && self.used.insert(id) {
                return id.to_string();
            }
        }
        while !self.used.insert(self.next) {
            self.next = self.next.saturating_add(1);
        }
        self.next.to_string()
    }
}

fn write_node(node: &Node, dialect: Dialect, ids: &mut Ids) -> Value {
    let chromium = dialect == Dialect::Chromium;
    match node {
        Node::Separator(separator) => {
            let mut map: Map<String, Value> = separator.extra.clone().into_iter().collect();
            map.insert("type".to_owned(), Value::from("separator"));
            Value::Object(map)
        }
        Node::Bookmark(bookmark) => {
            let mut map: Map<String, Value> = bookmark.extra.clone().into_iter().collect();
            map.insert("type".to_owned(), Value::from("url"));
            map.insert("name".to_owned(), Value::from(bookmark.title.clone()));
            map.insert("url".to_owned(), Value::from(bookmark.url.clone()));
            if chromium {
                let id = ids.id(map.get("id"));
                map.insert("id".to_owned(), Value::from(id));
                if let Some(added) = bookmark.added {
                    map.insert("date_added".to_owned(), Value::from(webkit_time(added)));
                }
                if let Some(modified) = bookmark.modified {
                    map.insert(
                        "date_modified".to_owned(),
                        Value::from(webkit_time(modified)),
                    );
                }
                let used = bookmark.visited.map_or_else(|| "0".to_owned(), webkit_time);
                map.insert("date_last_used".to_owned(), Value::from(used));
            } else {
                if let Some(description) = &bookmark.description {
                    map.insert("description".to_owned(), Value::from(description.clone()));
                }
                if let Some(keyword) = &bookmark.keyword {
                    map.insert("keyword".to_owned(), Value::from(keyword.clone()));
                }
            }
            Value::Object(map)
        }
        Node::Folder(folder) => {
            let mut map: Map<String, Value> = folder.extra.clone().into_iter().collect();
            map.insert("type".to_owned(), Value::from("folder"));
            map.insert("name".to_owned(), Value::from(folder.title.clone()));
            if chromium {
                let id = ids.id(map.get("id"));
                map.insert("id".to_owned(), Value::from(id));
                if let Some(added) = folder.added {
                    map.insert("date_added".to_owned(), Value::from(webkit_time(added)));
                }
                let modified = folder.modified.map_or_else(|| "0".to_owned(), webkit_time);
                map.insert("date_modified".to_owned(), Value::from(modified));
                map.entry("date_last_used".to_owned())
                    .or_insert_with(|| Value::from("0"));
            } else if let Some(description) = &folder.description {
                map.insert("description".to_owned(), Value::from(description.clone()));
            }
            let children: Vec<Value> = folder
                .children
                .iter()
                .filter(|c| !(chromium && matches!(c, Node::Separator(_))))
                .map(|c| write_node(c, dialect, ids))
                .collect();
            map.insert("children".to_owned(), Value::Array(children));
            Value::Object(map)
        }
    }
}

/// Chromium's checksum: MD5 over every node of `bookmark_bar`, `other` and `synced` in
/// pre-order: the id, the title as UTF-16LE, then `url` and the URL, or `folder`.
fn checksum(roots: &Map<String, Value>) -> String {
    let mut md5 = Md5::new();
    for (key, ..) in CHROMIUM_ROOTS {
        let mut pending: Vec<&Value> = roots.get(key).into_iter().collect();
        while let Some(node) = pending.pop() {
            let id = node.get("id").and_then(Value::as_str).unwrap_or_default();
            let name = node.get("name").and_then(Value::as_str).unwrap_or_default();
            md5.update(id.as_bytes());
            for unit in name.encode_utf16() {
                md5.update(unit.to_le_bytes());
            }
            match node.get("type").and_then(Value::as_str) {
                Some("url") => {
                    md5.update(b"url");
                    md5.update(
                        node.get("url")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .as_bytes(),
                    );
                }
                _ => {
                    md5.update(b"folder");
                    if let Some(Value::Array(children)) = node.get("children") {
                        pending.extend(children.iter().rev());
                    }
                }
            }
        }
    }
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON as Chromium's `JSONWriter` pretty-prints it: three-space indent, `[ a, b ]` arrays,
/// non-ASCII as UTF-8.
fn write_chromium_json(value: &Value, depth: usize, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push_str("{\n");
            let mut first = true;
            for (key, value) in map {
                if !first {
                    out.push_str(",\n");
                }
                first = false;
                out.push_str(&"   ".repeat(depth + 1));
                write_json_string(key, out);
                out.push_str(": ");
                write_chromium_json(value, depth + 1, out);
            }
            out.push('\n');
            out.push_str(&"   ".repeat(depth));
            out.push('}');
        }
        Value::Array(items) => {
            out.push_str("[ ");
            let mut first = true;
            for item in items {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                write_chromium_json(item, depth, out);
            }
            out.push_str(" ]");
        }
        Value::String(text) => write_json_string(text, out),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string the way Chromium escapes it (`<` and the line separators too).
fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' => out.push_str("\\u003C"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webkit_epoch_converts() {
        // 2024-01-01T00:00:00Z.
        let unix = 1_704_067_200_000_000;
        let mut map = Map::new();
        map.insert("d".to_owned(), Value::String(webkit_time(unix)));
        assert_eq!(take_webkit_time(&mut map, "d"), Some(unix));
        assert!(map.is_empty());
    }

    #[test]
    fn urls_chromium_would_drop_are_recognised() {
        for good in [
            "https://example.com/",
            "http://a.b:8080/x?y#z",
            "https://user@host/",
            "javascript:alert(1)",
            "place:sort=8",
            "file:///etc/hosts",
            "about:blank",
            "chrome://settings",
        ] {
            assert!(accepts_url(good), "{good}");
        }
        for bad in [
            "",
            "not a url",
            "http://",
            "https:///path",
            "http:example.com",
            "1abc:x",
            "http://a b/",
        ] {
            assert!(!accepts_url(bad), "{bad}");
        }
    }

    #[test]
    fn unreadable_time_is_kept() {
        let mut map = Map::new();
        map.insert("d".to_owned(), Value::String("soon".to_owned()));
        assert_eq!(take_webkit_time(&mut map, "d"), None);
        assert_eq!(map.len(), 1);
    }
}
