//! The canonical bookmark model shared by every importer and exporter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fields a source format has that the canonical model does not map, kept verbatim so that a
/// round trip through the canonical JSON loses nothing.
///
/// Keys are the source's own names: lower-case or camelCase JSON keys for Firefox, Chromium and
/// Falkon (`guid`, `id`, `iconUri`, `meta_info`), XML attribute names for XBEL, and upper-case
/// attribute names (`ICON`, `ICON_URI`, `LAST_CHARSET`) for Netscape HTML. The HTML exporter
/// writes back the upper-case string entries as attributes, so HTML → HTML keeps them too.
pub type Extra = BTreeMap<String, Value>;

/// A whole bookmark collection: the top-level nodes in order, plus file-level extras.
///
/// Dates everywhere in the model are Unix time in **microseconds** (`i64`), the resolution of
/// Firefox and Chromium; formats with coarser dates (HTML: seconds) are scaled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BookmarkTree {
    /// Top-level nodes, in order. Browser roots (toolbar, menu, …) are folders with a
    /// [`FolderRole`].
    #[serde(default)]
    pub roots: Vec<Node>,
    /// File-level fields of the source (Chromium `checksum`, Firefox root `guid`, the HTML
    /// `title`, the XBEL `version`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: Extra,
}

/// One entry of a bookmark tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Node {
    /// A folder with ordered children.
    Folder(Folder),
    /// A bookmark (a titled URL).
    Bookmark(Bookmark),
    /// A separator line.
    Separator(Separator),
}

/// Which browser root a top-level folder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FolderRole {
    /// The bookmarks toolbar (Chromium and Falkon `bookmark_bar`, Firefox `toolbarFolder`).
    Toolbar,
    /// The bookmarks menu (Firefox `bookmarksMenuFolder`, Falkon `bookmark_menu`).
    Menu,
    /// Other or unfiled bookmarks (Chromium and Falkon `other`, Firefox `unfiledBookmarksFolder`).
    Other,
    /// Mobile bookmarks (Chromium `synced`, Firefox `mobileFolder`).
    Mobile,
}

/// A folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Folder {
    /// Display title (may be empty).
    #[serde(default)]
    pub title: String,
    /// The browser root this folder is, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<FolderRole>,
    /// Description (Firefox HTML `<DD>` after the folder, XBEL `<desc>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Children in order.
    #[serde(default)]
    pub children: Vec<Node>,
    /// Creation time, Unix microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<i64>,
    /// Last modification time, Unix microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
    /// Unmapped source fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: Extra,
}

/// A bookmark.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bookmark {
    /// Display title (may be empty).
    #[serde(default)]
    pub title: String,
    /// The URL exactly as the source had it (not normalised, may be empty in broken files).
    #[serde(default)]
    pub url: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags, in source order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Keyword (Firefox and Falkon keyword, HTML `SHORTCUTURL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// Creation time, Unix microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<i64>,
    /// Last modification time, Unix microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
    /// Last visit or use, Unix microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visited: Option<i64>,
    /// Unmapped source fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: Extra,
}

/// A separator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Separator {
    /// Unmapped source fields (Firefox `guid`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: Extra,
}

/// Counts of the nodes in a tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of bookmarks.
    pub bookmarks: usize,
    /// Number of folders, browser roots included.
    pub folders: usize,
    /// Number of separators.
    pub separators: usize,
}

impl BookmarkTree {
    /// Counts bookmarks, folders and separators at every depth.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        let mut pending: Vec<&Node> = self.roots.iter().collect();
        while let Some(node) = pending.pop() {
            match node {
                Node::Folder(folder) => {
                    stats.folders += 1;
                    pending.extend(folder.children.iter());
                }
                Node::Bookmark(_) => stats.bookmarks += 1,
                Node::Separator(_) => stats.separators += 1,
            }
        }
        stats
    }

    /// The deepest folder nesting (0 for a tree without folders).
    pub fn depth(&self) -> usize {
        let mut max = 0;
        let mut pending: Vec<(&Node, usize)> = self.roots.iter().map(|n| (n, 1)).collect();
        while let Some((node, depth)) = pending.pop() {
            if let Node::Folder(folder) = node {
                max = max.max(depth);
                pending.extend(folder.children.iter().map(|n| (n, depth + 1)));
            }
        }
        max
    }
}

impl From<Folder> for Node {
    fn from(folder: Folder) -> Self {
        Node::Folder(folder)
    }
}

impl From<Bookmark> for Node {
    fn from(bookmark: Bookmark) -> Self {
        Node::Bookmark(bookmark)
    }
}

impl From<Separator> for Node {
    fn from(separator: Separator) -> Self {
        Node::Separator(separator)
    }
}
