//! Chromium `Bookmarks` and Falkon `bookmarks.json`: the same shape (`roots` of typed nodes
//! with `name`, `url`, `children`), different fields.

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

/// The Chromium string for Unix microseconds (for tests and a future exporter).
#[cfg(test)]
pub(super) fn webkit_time(unix_us: i64) -> String {
    unix_us.saturating_add(WEBKIT_EPOCH_OFFSET_US).to_string()
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
    fn unreadable_time_is_kept() {
        let mut map = Map::new();
        map.insert("d".to_owned(), Value::String("soon".to_owned()));
        assert_eq!(take_webkit_time(&mut map, "d"), None);
        assert_eq!(map.len(), 1);
    }
}
