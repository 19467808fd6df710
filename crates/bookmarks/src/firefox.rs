//! Firefox JSON backups (`bookmarks-*.json`) and their mozLz4-compressed form (`.jsonlz4`).

use serde_json::{Map, Value};

use super::error::ImportError;
use super::json_source::{
    check_depth, into_extra, object, parse, structure, take_children, take_i64, take_string,
};
use super::model::{Bookmark, BookmarkTree, Folder, FolderRole, Node, Separator};
use super::{Format, MAX_IMPORT_SIZE};

/// The 8-byte magic of mozLz4 files.
pub(super) const MOZLZ4_MAGIC: &[u8] = b"mozLz40\0";

const PLACE: &str = "text/x-moz-place";
const CONTAINER: &str = "text/x-moz-place-container";
const SEPARATOR: &str = "text/x-moz-place-separator";
const DESCRIPTION_ANNO: &str = "bookmarkProperties/description";

const ROOTS: [(&str, FolderRole); 4] = [
    ("bookmarksMenuFolder", FolderRole::Menu),
    ("toolbarFolder", FolderRole::Toolbar),
    ("unfiledBookmarksFolder", FolderRole::Other),
    ("mobileFolder", FolderRole::Mobile),
];

pub(super) fn import_jsonlz4(bytes: &[u8]) -> Result<BookmarkTree, ImportError> {
    let json = decompress_mozlz4(bytes)?;
    import_as(&json, Format::FirefoxJsonLz4)
}

/// Unpacks mozLz4: the magic, the decompressed size (u32 LE), one LZ4 block.
pub(super) fn decompress_mozlz4(bytes: &[u8]) -> Result<Vec<u8>, ImportError> {
    let rest = bytes
        .strip_prefix(MOZLZ4_MAGIC)
        .ok_or_else(|| ImportError::InvalidLz4("the mozLz40 header is missing".to_owned()))?;
    let (size, block) = match rest {
        [a, b, c, d, block @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]), block),
        _ => {
            return Err(ImportError::InvalidLz4(
                "the file ends inside the header (truncated)".to_owned(),
            ))
        }
    };
    if u64::from(size) > MAX_IMPORT_SIZE {
        return Err(ImportError::TooLarge {
            size: u64::from(size),
            limit: MAX_IMPORT_SIZE,
        });
    }
    let mut out = vec![0; size as usize];
    let written = lz4_flex::block::decompress_into(block, &mut out).map_err(|e| {
        ImportError::InvalidLz4(format!("the compressed data is damaged or truncated ({e})"))
    })?;
    out.truncate(written);
    Ok(out)
}

/// Packs `json` as mozLz4, as Firefox writes it.
pub fn compress_mozlz4(json: &[u8]) -> Vec<u8> {
    let mut out = MOZLZ4_MAGIC.to_vec();
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&lz4_flex::block::compress(json));
    out
}

pub(super) fn import_json(bytes: &[u8]) -> Result<BookmarkTree, ImportError> {
    import_as(bytes, Format::FirefoxJson)
}

fn import_as(bytes: &[u8], format: Format) -> Result<BookmarkTree, ImportError> {
    let mut top = object(format, "", parse(format, bytes)?)?;
    let Some(children) = take_children(format, "", &mut top)? else {
        return Err(structure(
            format,
            "",
            "no \"children\": not the places root of a Firefox backup",
        ));
    };
    let mut roots = Vec::with_capacity(children.len());
    for (i, child) in children.into_iter().enumerate() {
        roots.push(read_node(format, &format!("/children/{i}"), child, 1)?);
    }
    Ok(BookmarkTree {
        roots,
        extra: into_extra(top),
    })
}

enum Kind {
    Folder,
    Bookmark,
    Separator,
}

fn read_node(
    format: Format,
    path: &str,
    mut map: Map<String, Value>,
    depth: usize,
) -> Result<Node, ImportError> {
    let by_type = match map.get("type").and_then(Value::as_str) {
        Some(PLACE) => Some(Kind::Bookmark),
        Some(CONTAINER) => Some(Kind::Folder),
        Some(SEPARATOR) => Some(Kind::Separator),
        _ => None,
    };
    if by_type.is_some() {
        map.remove("type");
    }
    let by_code = match map.get("typeCode").and_then(Value::as_i64) {
        Some(1) => Some(Kind::Bookmark),
        Some(2) => Some(Kind::Folder),
        Some(3) => Some(Kind::Separator),
        _ => None,
    };
    if by_code.is_some() {
        map.remove("typeCode");
    }
    let kind = match by_type.or(by_code) {
        Some(kind) => kind,
        None if map.contains_key("children") => Kind::Folder,
        None if map.contains_key("uri") => Kind::Bookmark,
        None => return Err(structure(format, path, "node of unknown type")),
    };
    let description = take_description(&mut map);
    Ok(match kind {
        Kind::Separator => Node::Separator(Separator {
            extra: into_extra(map),
        }),
        Kind::Bookmark => {
            let tags = match take_string(&mut map, "tags") {
                Some(tags) => tags
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                None => Vec::new(),
            };
            Node::Bookmark(Bookmark {
                title: take_string(&mut map, "title").unwrap_or_default(),
                url: take_string(&mut map, "uri").unwrap_or_default(),
                description,
                tags,
                keyword: take_string(&mut map, "keyword"),
                added: take_i64(&mut map, "dateAdded"),
                modified: take_i64(&mut map, "lastModified"),
                visited: None,
                extra: into_extra(map),
            })
        }
        Kind::Folder => {
            check_depth(format, depth)?;
            let children = take_children(format, path, &mut map)?.unwrap_or_default();
            let mut nodes = Vec::with_capacity(children.len());
            for (i, child) in children.into_iter().enumerate() {
                let child_path = format!("{path}/children/{i}");
                nodes.push(read_node(format, &child_path, child, depth + 1)?);
            }
            let role = match map.get("root").and_then(Value::as_str) {
                Some(root) => ROOTS
                    .iter()
                    .find(|(r, _)| *r == root)
                    .map(|(_, role)| *role),
                None => None,
            };
            if role.is_some() {
                map.remove("root");
            }
            Node::Folder(Folder {
                title: take_string(&mut map, "title").unwrap_or_default(),
                role,
                description,
                children: nodes,
                added: take_i64(&mut map, "dateAdded"),
                modified: take_i64(&mut map, "lastModified"),
                extra: into_extra(map),
            })
        }
    })
}

/// Takes the description out of old-style `annos`; other annotations stay.
fn take_description(map: &mut Map<String, Value>) -> Option<String> {
    let Some(Value::Array(annos)) = map.get_mut("annos") else {
        return None;
    };
    let index = annos.iter().position(|anno| {
        anno.get("name").and_then(Value::as_str) == Some(DESCRIPTION_ANNO)
            && anno.get("value").is_some_and(Value::is_string)
    })?;
    let anno = annos.remove(index);
    if annos.is_empty() {
        map.remove("annos");
    }
    anno.get("value")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Exports a tree as a Firefox JSON backup (`bookmarks-*.json`), the file Firefox restores
/// from (Library → Import and Backup → Restore). Roots get their Firefox `root` names and
/// fixed GUIDs when they lack them; descriptions go back into the old `annos` form; unknown
/// fields are written back as they were read.
pub(super) fn export_json(tree: &BookmarkTree) -> Result<Vec<u8>, ImportError> {
    let mut top: Map<String, Value> = tree.extra.clone().into_iter().collect();
    for (key, value) in [
        ("guid", Value::from("root________")),
        ("title", Value::from("")),
        ("typeCode", Value::from(2)),
        ("type", Value::from(CONTAINER)),
        ("root", Value::from("placesRoot")),
    ] {
        top.entry(key.to_owned()).or_insert(value);
    }
    let children = tree
        .roots
        .iter()
        .enumerate()
        .map(|(i, node)| write_node(node, i, true))
        .collect();
    top.insert("children".to_owned(), Value::Array(children));
    serde_json::to_vec(&Value::Object(top)).map_err(|e| ImportError::Serialize(e.to_string()))
}

const ROOT_GUIDS: [(FolderRole, &str); 4] = [
    (FolderRole::Menu, "menu________"),
    (FolderRole::Toolbar, "toolbar_____"),
    (FolderRole::Other, "unfiled_____"),
    (FolderRole::Mobile, "mobile______"),
];

fn write_node(node: &Node, index: usize, top: bool) -> Value {
    let extra = match node {
        Node::Folder(f) => &f.extra,
        Node::Bookmark(b) => &b.extra,
        Node::Separator(s) => &s.extra,
    };
    let mut map: Map<String, Value> = extra.clone().into_iter().collect();
    map.entry("index".to_owned()).or_insert(Value::from(index));
    let dates = |added: Option<i64>, modified: Option<i64>, map: &mut Map<String, Value>| {
        if let Some(added) = added {
            map.insert("dateAdded".to_owned(), Value::from(added));
        }
        if let Some(modified) = modified {
            map.insert("lastModified".to_owned(), Value::from(modified));
        }
    };
    match node {
        Node::Separator(_) => {
            map.insert("typeCode".to_owned(), Value::from(3));
            map.insert("type".to_owned(), Value::from(SEPARATOR));
        }
        Node::Bookmark(bookmark) => {
            map.insert("typeCode".to_owned(), Value::from(1));
            map.insert("type".to_owned(), Value::from(PLACE));
            map.insert("title".to_owned(), Value::from(bookmark.title.clone()));
            map.insert("uri".to_owned(), Value::from(bookmark.url.clone()));
            if !bookmark.tags.is_empty() {
                map.insert("tags".to_owned(), Value::from(bookmark.tags.join(",")));
            }
            if let Some(keyword) = &bookmark.keyword {
                map.insert("keyword".to_owned(), Value::from(keyword.clone()));
            }
            dates(bookmark.added, bookmark.modified, &mut map);
            put_description(&mut map, bookmark.description.as_deref());
        }
        Node::Folder(folder) => {
            map.insert("typeCode".to_owned(), Value::from(2));
            map.insert("type".to_owned(), Value::from(CONTAINER));
            map.insert("title".to_owned(), Value::from(folder.title.clone()));
            if let (true, Some(role)) = (top, folder.role) {
                if let Some((name, _)) = ROOTS.iter().find(|(_, r)| *r == role) {
                    map.insert("root".to_owned(), Value::from(*name));
                }
                if let Some((_, guid)) = ROOT_GUIDS.iter().find(|(r, _)| *r == role) {
                    map.entry("guid".to_owned()).or_insert(Value::from(*guid));
                }
            }
            dates(folder.added, folder.modified, &mut map);
            put_description(&mut map, folder.description.as_deref());
            let children = folder
                .children
                .iter()
                .enumerate()
                .map(|(i, child)| write_node(child, i, false))
                .collect();
            map.insert("children".to_owned(), Value::Array(children));
        }
    }
    Value::Object(map)
}

fn put_description(map: &mut Map<String, Value>, description: Option<&str>) {
    let Some(description) = description else {
        return;
    };
    let anno = serde_json::json!({
        "name": DESCRIPTION_ANNO,
        "flags": 0,
        "expires": 4,
        "value": description,
    });
    match map.get_mut("annos") {
        Some(Value::Array(annos)) => annos.push(anno),
        _ => {
            map.insert("annos".to_owned(), Value::Array(vec![anno]));
        }
    }
}
