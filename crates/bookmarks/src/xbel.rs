//! XBEL 1.0 (XML Bookmark Exchange Language), as written by KDE, Konqueror, Midori and
//! bookmark tools.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::QName;
use quick_xml::Reader;
use serde_json::Value;

use super::error::{line_column, utf8, ImportError};
use super::model::{Bookmark, BookmarkTree, Extra, Folder, Node, Separator};
use super::{Format, MAX_DEPTH};

const FORMAT: Format = Format::Xbel;

enum Item {
    Folder(Folder),
    Bookmark(Bookmark),
}

#[derive(Clone, Copy, PartialEq)]
enum TextField {
    Title,
    Desc,
}

struct State<'a> {
    text: &'a str,
    tree: BookmarkTree,
    stack: Vec<Item>,
    /// The `<title>` or `<desc>` being read, and the stack depth it belongs to.
    reading: Option<(TextField, usize)>,
    buffer: String,
    root_open: bool,
    root_closed: bool,
}

pub(super) fn import(bytes: &[u8]) -> Result<BookmarkTree, ImportError> {
    let text = utf8(FORMAT, bytes)?;
    let mut reader = Reader::from_str(text);
    let mut state = State {
        text,
        tree: BookmarkTree::default(),
        stack: Vec::new(),
        reading: None,
        buffer: String::new(),
        root_open: false,
        root_closed: false,
    };
    loop {
        let event = reader.read_event().map_err(|e| {
            syntax(
                text,
                offset(reader.error_position()),
                &quick_xml_message(&e),
            )
        })?;
        let position = offset(reader.buffer_position());
        match event {
            Event::Start(start) => state.start(&mut reader, &start, false, position)?,
            Event::Empty(start) => state.start(&mut reader, &start, true, position)?,
            Event::End(end) => state.end(end.local_name().as_ref()),
            Event::Text(text_event) => {
                if state.reading.is_some() {
                    let decoded = text_event
                        .unescape()
                        .map_err(|e| syntax(text, position, &quick_xml_message(&e)))?;
                    state.buffer.push_str(&decoded);
                }
            }
            Event::CData(cdata) => {
                if state.reading.is_some() {
                    state
                        .buffer
                        .push_str(&String::from_utf8_lossy(cdata.into_inner().as_ref()));
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
        if state.root_closed {
            break;
        }
    }
    if !state.root_open {
        return Err(syntax(text, 0, "no <xbel> element"));
    }
    if !state.root_closed {
        return Err(syntax(
            text,
            text.len(),
            "the file ends unexpectedly (it looks truncated)",
        ));
    }
    Ok(state.tree)
}

impl State<'_> {
    fn start(
        &mut self,
        reader: &mut Reader<&[u8]>,
        start: &BytesStart<'_>,
        empty: bool,
        position: usize,
    ) -> Result<(), ImportError> {
        let local = start.local_name();
        let name = local.as_ref();
        if !self.root_open {
            if name != b"xbel" {
                return Err(syntax(
                    self.text,
                    position,
                    &format!(
                        "the root element is <{}>, not <xbel>",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            self.root_open = true;
            self.tree.extra = self.attributes(start, position)?;
            self.root_closed = empty;
            return Ok(());
        }
        match name {
            b"folder" => {
                let depth = self
                    .stack
                    .iter()
                    .filter(|i| matches!(i, Item::Folder(_)))
                    .count();
                if depth >= MAX_DEPTH {
                    return Err(ImportError::TooDeep {
                        format: FORMAT,
                        limit: MAX_DEPTH,
                    });
                }
                let mut folder = Folder::default();
                for (key, value) in self.attributes(start, position)? {
                    match (key.as_str(), &value) {
                        ("added", Value::String(s)) if parse_date(s).is_some() => {
                            folder.added = parse_date(s);
                        }
                        ("modified", Value::String(s)) if parse_date(s).is_some() => {
                            folder.modified = parse_date(s);
                        }
                        _ => {
                            folder.extra.insert(key, value);
                        }
                    }
                }
                self.stack.push(Item::Folder(folder));
                if empty {
                    self.close_item();
                }
            }
            b"bookmark" => {
                let mut bookmark = Bookmark::default();
                for (key, value) in self.attributes(start, position)? {
                    match (key.as_str(), value) {
                        ("href", Value::String(s)) => bookmark.url = s,
                        ("added", Value::String(s)) if parse_date(&s).is_some() => {
                            bookmark.added = parse_date(&s);
                        }
                        ("modified", Value::String(s)) if parse_date(&s).is_some() => {
                            bookmark.modified = parse_date(&s);
                        }
                        ("visited", Value::String(s)) if parse_date(&s).is_some() => {
                            bookmark.visited = parse_date(&s);
                        }
                        (_, value) => {
                            bookmark.extra.insert(key, value);
                        }
                    }
                }
                self.stack.push(Item::Bookmark(bookmark));
                if empty {
                    self.close_item();
                }
            }
            b"separator" => {
                let extra = self.attributes(start, position)?;
                self.container().push(Node::Separator(Separator { extra }));
                if !empty {
                    self.skip(reader, start, position)?;
                }
            }
            b"title" | b"desc" => {
                let field = if name == b"title" {
                    TextField::Title
                } else {
                    TextField::Desc
                };
                self.buffer.clear();
                self.reading = Some((field, self.stack.len()));
                if empty {
                    self.end(name);
                }
            }
            b"info" => {
                let raw = if empty {
                    String::new()
                } else {
                    self.skip(reader, start, position)?
                };
                let info = Value::String(raw.trim().to_owned());
                match self.stack.last_mut() {
                    Some(Item::Folder(folder)) => folder.extra.insert("info".to_owned(), info),
                    Some(Item::Bookmark(bookmark)) => {
                        bookmark.extra.insert("info".to_owned(), info)
                    }
                    None => self.tree.extra.insert("info".to_owned(), info),
                };
            }
            // `<alias>` and unknown elements are skipped.
            _ => {
                if !empty {
                    self.skip(reader, start, position)?;
                }
            }
        }
        Ok(())
    }

    fn end(&mut self, name: &[u8]) {
        match name {
            b"title" | b"desc" => {
                let Some((field, depth)) = self.reading.take() else {
                    return;
                };
                let text = self.buffer.trim().to_owned();
                self.buffer.clear();
                let target = if depth == self.stack.len() {
                    self.stack.last_mut()
                } else {
                    None
                };
                match (target, field) {
                    (Some(Item::Folder(folder)), TextField::Title) => folder.title = text,
                    (Some(Item::Bookmark(bookmark)), TextField::Title) => bookmark.title = text,
                    (Some(Item::Folder(folder)), TextField::Desc) => {
                        folder.description = Some(text).filter(|t| !t.is_empty());
                    }
                    (Some(Item::Bookmark(bookmark)), TextField::Desc) => {
                        bookmark.description = Some(text).filter(|t| !t.is_empty());
                    }
                    (None, TextField::Title) => {
                        self.tree
                            .extra
                            .insert("title".to_owned(), Value::String(text));
                    }
                    (None, TextField::Desc) => {
                        self.tree
                            .extra
                            .insert("desc".to_owned(), Value::String(text));
                    }
                }
            }
            b"folder" | b"bookmark" => self.close_item(),
            b"xbel" => self.root_closed = true,
            _ => {}
        }
    }

    /// Closes the innermost folder or bookmark into its parent.
    fn close_item(&mut self) {
        let node = match self.stack.pop() {
            Some(Item::Folder(folder)) => Node::Folder(folder),
            Some(Item::Bookmark(bookmark)) => Node::Bookmark(bookmark),
            None => return,
        };
        self.container().push(node);
    }

    /// The children list of the innermost open folder (the top level when there is none).
    fn container(&mut self) -> &mut Vec<Node> {
        for item in self.stack.iter_mut().rev() {
            if let Item::Folder(folder) = item {
                return &mut folder.children;
            }
        }
        &mut self.tree.roots
    }

    /// Skips to the end of `start`'s element and returns its raw inner XML.
    fn skip(
        &self,
        reader: &mut Reader<&[u8]>,
        start: &BytesStart<'_>,
        position: usize,
    ) -> Result<String, ImportError> {
        let name = start.name().as_ref().to_vec();
        let span = reader
            .read_to_end(QName(&name))
            .map_err(|e| syntax(self.text, position, &quick_xml_message(&e)))?;
        Ok(self
            .text
            .get(offset(span.start)..offset(span.end))
            .unwrap_or_default()
            .to_owned())
    }

    fn attributes(&self, start: &BytesStart<'_>, position: usize) -> Result<Extra, ImportError> {
        let mut extra = Extra::new();
        for attribute in start.attributes() {
            let attribute = attribute
                .map_err(|e| syntax(self.text, position, &format!("bad attribute: {e}")))?;
            let value = attribute
                .unescape_value()
                .map_err(|e| syntax(self.text, position, &quick_xml_message(&e)))?;
            let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
            extra.insert(key, Value::String(value.into_owned()));
        }
        Ok(extra)
    }
}

fn offset(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}

fn syntax(text: &str, offset: usize, message: &str) -> ImportError {
    let (line, column) = line_column(text.as_bytes(), offset);
    ImportError::Syntax {
        format: FORMAT,
        line,
        column,
        message: message.to_owned(),
    }
}

fn quick_xml_message(error: &quick_xml::Error) -> String {
    error.to_string()
}

/// An XBEL date: ISO 8601 (with or without a zone, UTC assumed), a plain date, or Unix
/// seconds. Returns Unix microseconds.
fn parse_date(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(date) = DateTime::parse_from_rfc3339(value) {
        return Some(date.timestamp_micros());
    }
    for pattern in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(date) = NaiveDateTime::parse_from_str(value, pattern) {
            return Some(date.and_utc().timestamp_micros());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    value.parse::<i64>().ok()?.checked_mul(1_000_000)
}

// ---------------------------------------------------------------------------------------------
// Exporter
// ---------------------------------------------------------------------------------------------

/// Keys of the file-level extras that are elements of `<xbel>`, not attributes.
const ROOT_ELEMENTS: [&str; 3] = ["title", "desc", "info"];

/// Exports a tree as XBEL 1.0. Extras that are strings with attribute-like names are written
/// back as attributes, `info` as the raw XML it was read from (when it is well-formed XML;
/// otherwise as text), dates as RFC 3339.
pub(super) fn export(tree: &BookmarkTree) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE xbel PUBLIC \
         \"+//IDN python.org//DTD XML Bookmark Exchange Language 1.0//EN//XML\" \
         \"http://pyxml.sourceforge.net/topics/dtds/xbel.dtd\">\n<xbel",
    );
    let mut attributes = tree.extra.clone();
    attributes.retain(|k, _| !ROOT_ELEMENTS.contains(&k.as_str()));
    attributes
        .entry("version".to_owned())
        .or_insert_with(|| Value::String("1.0".to_owned()));
    write_attributes(&attributes, &[], &mut out);
    out.push_str(">\n");
    for key in ROOT_ELEMENTS {
        if let Some(Value::String(text)) = tree.extra.get(key) {
            write_text_element(key, text, 1, &mut out);
        }
    }
    for node in &tree.roots {
        write_node(node, 1, &mut out);
    }
    out.push_str("</xbel>\n");
    out
}

fn write_node(node: &Node, level: usize, out: &mut String) {
    let indent = "  ".repeat(level);
    match node {
        Node::Separator(separator) => {
            out.push_str(&indent);
            out.push_str("<separator");
            write_attributes(&separator.extra, &[], out);
            out.push_str("/>\n");
        }
        Node::Bookmark(bookmark) => {
            out.push_str(&indent);
            out.push_str("<bookmark href=\"");
            escape(&bookmark.url, out);
            out.push('"');
            let mut written = vec!["href"];
            write_date("added", bookmark.added, &mut written, out);
            write_date("modified", bookmark.modified, &mut written, out);
            write_date("visited", bookmark.visited, &mut written, out);
            write_attributes(&bookmark.extra, &written, out);
            out.push_str(">\n");
            write_text_element("title", &bookmark.title, level + 1, out);
            if let Some(description) = &bookmark.description {
                write_text_element("desc", description, level + 1, out);
            }
            if let Some(Value::String(info)) = bookmark.extra.get("info") {
                write_text_element("info", info, level + 1, out);
            }
            out.push_str(&indent);
            out.push_str("</bookmark>\n");
        }
        Node::Folder(folder) => {
            out.push_str(&indent);
            out.push_str("<folder");
            let mut written = Vec::new();
            write_date("added", folder.added, &mut written, out);
            write_date("modified", folder.modified, &mut written, out);
            write_attributes(&folder.extra, &written, out);
            out.push_str(">\n");
            write_text_element("title", &folder.title, level + 1, out);
            if let Some(description) = &folder.description {
                write_text_element("desc", description, level + 1, out);
            }
            if let Some(Value::String(info)) = folder.extra.get("info") {
                write_text_element("info", info, level + 1, out);
            }
            for child in &folder.children {
                write_node(child, level + 1, out);
            }
            out.push_str(&indent);
            out.push_str("</folder>\n");
        }
    }
}

fn write_date(
    name: &'static str,
    micros: Option<i64>,
    written: &mut Vec<&'static str>,
    out: &mut String,
) {
    let Some(date) = micros.and_then(DateTime::from_timestamp_micros) else {
        return;
    };
    out.push_str(&format!(
        " {name}=\"{}\"",
        date.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    ));
    written.push(name);
}

fn write_attributes(extra: &Extra, written: &[&str], out: &mut String) {
    for (name, value) in extra {
        let Value::String(value) = value else {
            continue;
        };
        if name == "info" || written.contains(&name.as_str()) || !is_xml_name(name) {
            continue;
        }
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        escape(value, out);
        out.push('"');
    }
}

fn write_text_element(name: &str, text: &str, level: usize, out: &mut String) {
    out.push_str(&"  ".repeat(level));
    out.push('<');
    out.push_str(name);
    out.push('>');
    if name == "info" && is_balanced_xml(text) {
        out.push_str(text);
    } else {
        escape(text, out);
    }
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

fn escape(text: &str, out: &mut String) {
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
}

fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

/// Whether `text` is a sequence of well-formed, balanced XML content.
fn is_balanced_xml(text: &str) -> bool {
    let mut reader = Reader::from_str(text);
    let mut depth: usize = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Ok(Event::Eof) => return depth == 0,
            Ok(Event::Decl(_) | Event::DocType(_)) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_date;

    #[test]
    fn dates() {
        assert_eq!(
            parse_date("2024-01-01T00:00:00Z"),
            Some(1_704_067_200_000_000)
        );
        assert_eq!(
            parse_date("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200_000_000)
        );
        assert_eq!(
            parse_date("2024-01-01T00:00:00.5"),
            Some(1_704_067_200_500_000)
        );
        assert_eq!(parse_date("2024-01-01"), Some(1_704_067_200_000_000));
        assert_eq!(parse_date("1704067200"), Some(1_704_067_200_000_000));
        assert_eq!(parse_date("someday"), None);
    }
}
