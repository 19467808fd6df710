//! Netscape bookmark HTML (`<!DOCTYPE NETSCAPE-Bookmark-file-1>`): a lenient importer that
//! reads what Firefox, Chromium, Falkon, Safari and old Netscape/IE write (unclosed `<DT>` and
//! `<p>`, any case, named and numeric entities, truncated files), and an exporter in the
//! Firefox dialect.

use std::fmt::Write as _;

use serde_json::Value;

use super::error::{utf8, ImportError};
use super::model::{Bookmark, BookmarkTree, Extra, Folder, FolderRole, Node, Separator};
use super::{Format, MAX_DEPTH};

const FORMAT: Format = Format::NetscapeHtml;
const DEFAULT_TITLE: &str = "Bookmarks";

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Token<'a> {
    /// A start tag; name lower-case, attribute names upper-case, values entity-decoded.
    Start {
        name: String,
        attrs: Vec<(String, String)>,
    },
    /// An end tag, name lower-case.
    End { name: String },
    /// Raw text (entities not decoded yet).
    Text(&'a str),
}

struct Tokenizer<'a> {
    text: &'a str,
    pos: usize,
    peeked: Option<Token<'a>>,
}

impl<'a> Tokenizer<'a> {
    fn new(text: &'a str) -> Self {
        Tokenizer {
            text,
            pos: 0,
            peeked: None,
        }
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.text.as_bytes().get(i).copied()
    }

    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.text.get(from..to).unwrap_or_default()
    }

    fn is_tag_start(&self, i: usize) -> bool {
        self.byte(i) == Some(b'<')
            && self
                .byte(i + 1)
                .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'/' | b'!' | b'?'))
    }

    /// Index of `needle` at or after `from`, or the end of the text.
    fn find(&self, from: usize, needle: &str) -> Option<usize> {
        self.text.get(from..)?.find(needle).map(|i| from + i)
    }

    fn push_back(&mut self, token: Token<'a>) {
        self.peeked = Some(token);
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        if let Some(token) = self.peeked.take() {
            return Some(token);
        }
        let len = self.text.len();
        loop {
            let start = self.pos;
            if start >= len {
                return None;
            }
            if !self.is_tag_start(start) {
                let mut end = start + 1;
                while end < len && !self.is_tag_start(end) {
                    end += 1;
                }
                // `<` and every byte ending a run are ASCII, so `end` is a char boundary
                // unless the run hit the end; `get` keeps this panic-free either way.
                while end < len && !self.text.is_char_boundary(end) {
                    end += 1;
                }
                self.pos = end;
                return Some(Token::Text(self.slice(start, end)));
            }
            match self.byte(start + 1) {
                Some(b'!') if self.slice(start, start + 4) == "<!--" => {
                    self.pos = self.find(start + 4, "-->").map_or(len, |i| i + 3);
                }
                Some(b'!' | b'?') => {
                    self.pos = self.find(start + 2, ">").map_or(len, |i| i + 1);
                }
                Some(b'/') => {
                    let name_end = self.scan(start + 2, |b| b.is_ascii_alphanumeric());
                    let name = self.slice(start + 2, name_end).to_ascii_lowercase();
                    self.pos = self.find(name_end, ">").map_or(len, |i| i + 1);
                    if !name.is_empty() {
                        return Some(Token::End { name });
                    }
                }
                _ => return Some(self.start_tag(start)),
            }
        }
    }

    /// First index at or after `from` whose byte does not satisfy `keep`.
    fn scan(&self, from: usize, keep: impl Fn(u8) -> bool) -> usize {
        let mut i = from;
        while self.byte(i).is_some_and(&keep) {
            i += 1;
        }
        i
    }

    fn start_tag(&mut self, start: usize) -> Token<'a> {
        let name_end = self.scan(start + 1, |b| b.is_ascii_alphanumeric());
        let name = self.slice(start + 1, name_end).to_ascii_lowercase();
        let mut attrs: Vec<(String, String)> = Vec::new();
        let mut i = name_end;
        loop {
            i = self.scan(i, |b| b.is_ascii_whitespace());
            match self.byte(i) {
                None => break,
                Some(b'>') => {
                    i += 1;
                    break;
                }
                // An unclosed tag: stop before the next one.
                Some(b'<') => break,
                Some(b'/' | b'=' | b'"' | b'\'') => {
                    i += 1;
                    continue;
                }
                Some(_) => {}
            }
            let attr_end = self.scan(i, |b| {
                !(b.is_ascii_whitespace() || matches!(b, b'=' | b'>' | b'<' | b'/'))
            });
            let attr = self.slice(i, attr_end).to_ascii_uppercase();
            i = self.scan(attr_end, |b| b.is_ascii_whitespace());
            let mut value = "";
            if self.byte(i) == Some(b'=') {
                i = self.scan(i + 1, |b| b.is_ascii_whitespace());
                match self.byte(i) {
                    Some(quote @ (b'"' | b'\'')) => {
                        let quote = if quote == b'"' { "\"" } else { "'" };
                        // An unclosed quote ends at the end of the tag.
                        let close = self
                            .find(i + 1, quote)
                            .or_else(|| self.find(i + 1, ">"))
                            .unwrap_or(self.text.len());
                        value = self.slice(i + 1, close);
                        i = if self.byte(close).is_some_and(|b| b == b'>') {
                            close
                        } else {
                            close + 1
                        };
                    }
                    _ => {
                        let end = self.scan(i, |b| !(b.is_ascii_whitespace() || b == b'>'));
                        value = self.slice(i, end);
                        i = end;
                    }
                }
            }
            if !attr.is_empty() && !attrs.iter().any(|(a, _)| *a == attr) {
                attrs.push((attr, decode_entities(value)));
            }
        }
        self.pos = i.min(self.text.len());
        Token::Start { name, attrs }
    }
}

/// Tags that start a new part of the list: text collection stops before them.
fn is_structural(name: &str) -> bool {
    matches!(name, "dt" | "dl" | "dd" | "hr" | "h1" | "h3" | "a")
}

// ---------------------------------------------------------------------------------------------
// Importer
// ---------------------------------------------------------------------------------------------

struct Frame {
    /// `None` for the top-level list and for a `<DL>` without a heading (merged into its
    /// parent when it closes).
    folder: Option<Folder>,
    children: Vec<Node>,
}

#[derive(PartialEq)]
enum Last {
    Nothing,
    Bookmark,
    Heading,
}

struct Parser<'a> {
    tokens: Tokenizer<'a>,
    /// The top-level list.
    root: Vec<Node>,
    /// Open `<DL>`s below the top level.
    stack: Vec<Frame>,
    /// An `<H3>` waiting for its `<DL>`.
    heading: Option<Folder>,
    last: Last,
    entered_top_list: bool,
    seen_bookmark_markup: bool,
    h1: Option<String>,
    title: Option<String>,
}

pub(super) fn import(bytes: &[u8]) -> Result<BookmarkTree, ImportError> {
    let text = utf8(FORMAT, bytes)?;
    let mut parser = Parser {
        tokens: Tokenizer::new(text),
        root: Vec::new(),
        stack: Vec::new(),
        heading: None,
        last: Last::Nothing,
        entered_top_list: false,
        seen_bookmark_markup: false,
        h1: None,
        title: None,
    };
    parser.run()?;
    if !parser.seen_bookmark_markup {
        return Err(ImportError::Structure {
            format: FORMAT,
            path: "top level".to_owned(),
            message: "no bookmark list (<DL>, <A> or <H3>) found".to_owned(),
        });
    }
    parser.flush_heading();
    while !parser.stack.is_empty() {
        parser.close_frame();
    }
    let mut extra = Extra::new();
    if let Some(title) = parser.h1.or(parser.title) {
        extra.insert("title".to_owned(), Value::String(title));
    }
    Ok(BookmarkTree {
        roots: parser.root,
        extra,
    })
}

impl Parser<'_> {
    fn run(&mut self) -> Result<(), ImportError> {
        while let Some(token) = self.tokens.next_token() {
            let (name, attrs) = match token {
                Token::Start { name, attrs } => (name, attrs),
                Token::End { name } => {
                    if name == "dl" {
                        self.flush_heading();
                        self.close_frame();
                        self.last = Last::Nothing;
                    }
                    continue;
                }
                Token::Text(_) => continue,
            };
            match name.as_str() {
                "a" => {
                    self.seen_bookmark_markup = true;
                    self.flush_heading();
                    let title = self.text_until("a");
                    let bookmark = bookmark_from(attrs, title);
                    self.current().push(Node::Bookmark(bookmark));
                    self.last = Last::Bookmark;
                }
                "h3" => {
                    self.seen_bookmark_markup = true;
                    self.flush_heading();
                    let title = self.text_until("h3");
                    self.heading = Some(folder_from(attrs, title));
                    self.last = Last::Heading;
                }
                "h1" => {
                    let title = self.text_until("h1");
                    self.h1.get_or_insert(title);
                }
                "title" => {
                    let title = self.text_until("title");
                    self.title.get_or_insert(title);
                }
                "dd" => {
                    let text = self.text_until("dd");
                    let text = text.trim();
                    if !text.is_empty() {
                        self.describe(text.to_owned());
                    }
                    self.last = Last::Nothing;
                }
                "hr" => {
                    self.flush_heading();
                    let separator = Separator {
                        extra: attrs_extra(attrs),
                    };
                    self.current().push(Node::Separator(separator));
                    self.last = Last::Nothing;
                }
                "dl" => {
                    self.seen_bookmark_markup = true;
                    self.last = Last::Nothing;
                    match self.heading.take() {
                        Some(folder) => self.open_frame(Some(folder))?,
                        None if self.stack.is_empty() && !self.entered_top_list => {
                            self.entered_top_list = true;
                        }
                        None => self.open_frame(None)?,
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn current(&mut self) -> &mut Vec<Node> {
        match self.stack.last_mut() {
            Some(frame) => &mut frame.children,
            None => &mut self.root,
        }
    }

    fn open_frame(&mut self, folder: Option<Folder>) -> Result<(), ImportError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(ImportError::TooDeep {
                format: FORMAT,
                limit: MAX_DEPTH,
            });
        }
        self.stack.push(Frame {
            folder,
            children: Vec::new(),
        });
        Ok(())
    }

    fn close_frame(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let parent = self.current();
        match frame.folder {
            Some(mut folder) => {
                folder.children = frame.children;
                parent.push(Node::Folder(folder));
            }
            None => parent.extend(frame.children),
        }
    }

    /// An `<H3>` not followed by a `<DL>` is an empty folder.
    fn flush_heading(&mut self) {
        if let Some(folder) = self.heading.take() {
            self.current().push(Node::Folder(folder));
        }
    }

    fn describe(&mut self, text: String) {
        match self.last {
            Last::Heading => {
                if let Some(folder) = &mut self.heading {
                    folder.description.get_or_insert(text);
                }
            }
            Last::Bookmark => {
                if let Some(Node::Bookmark(bookmark)) = self.current().last_mut() {
                    bookmark.description.get_or_insert(text);
                }
            }
            Last::Nothing => {}
        }
    }

    /// Collects the text up to `</end>` (kept as is) or, when the element is left open, up to
    /// the next structural tag (then trimmed). Entities are decoded.
    fn text_until(&mut self, end: &str) -> String {
        let mut raw = String::new();
        let mut closed = false;
        while let Some(token) = self.tokens.next_token() {
            match token {
                Token::Text(text) => raw.push_str(text),
                Token::End { name } if name == end => {
                    closed = true;
                    break;
                }
                Token::End { name } if name == "dl" => {
                    self.tokens.push_back(Token::End { name });
                    break;
                }
                Token::Start { name, attrs } if is_structural(&name) => {
                    self.tokens.push_back(Token::Start { name, attrs });
                    break;
                }
                Token::Start { .. } | Token::End { .. } => {}
            }
        }
        let text = decode_entities(&raw);
        if closed && end != "dd" {
            text
        } else {
            text.trim().to_owned()
        }
    }
}

fn bookmark_from(attrs: Vec<(String, String)>, title: String) -> Bookmark {
    let mut bookmark = Bookmark {
        title,
        ..Bookmark::default()
    };
    for (name, value) in attrs {
        match name.as_str() {
            "HREF" => bookmark.url = value,
            "ADD_DATE" if parse_date(&value).is_some() => bookmark.added = parse_date(&value),
            "LAST_MODIFIED" if parse_date(&value).is_some() => {
                bookmark.modified = parse_date(&value);
            }
            "LAST_VISIT" if parse_date(&value).is_some() => bookmark.visited = parse_date(&value),
            "TAGS" => {
                bookmark.tags = value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "SHORTCUTURL" if !value.is_empty() => bookmark.keyword = Some(value),
            _ => {
                bookmark.extra.insert(name, Value::String(value));
            }
        }
    }
    bookmark
}

fn folder_from(attrs: Vec<(String, String)>, title: String) -> Folder {
    let mut folder = Folder {
        title,
        ..Folder::default()
    };
    for (name, value) in attrs {
        match name.as_str() {
            "ADD_DATE" if parse_date(&value).is_some() => folder.added = parse_date(&value),
            "LAST_MODIFIED" if parse_date(&value).is_some() => {
                folder.modified = parse_date(&value);
            }
            "PERSONAL_TOOLBAR_FOLDER" if value.eq_ignore_ascii_case("true") => {
                folder.role = Some(FolderRole::Toolbar);
            }
            "UNFILED_BOOKMARKS_FOLDER" if value.eq_ignore_ascii_case("true") => {
                folder.role = Some(FolderRole::Other);
            }
            _ => {
                folder.extra.insert(name, Value::String(value));
            }
        }
    }
    folder
}

fn attrs_extra(attrs: Vec<(String, String)>) -> Extra {
    attrs
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect()
}

/// An HTML date: Unix seconds, as every browser writes. Values too large for seconds are
/// taken as milliseconds (above 10^11, year 5138) or microseconds (above 10^14), which some
/// tools write. Returns Unix microseconds.
fn parse_date(value: &str) -> Option<i64> {
    let n: i64 = value.trim().parse().ok()?;
    if n.abs() >= 100_000_000_000_000 {
        Some(n)
    } else if n.abs() >= 100_000_000_000 {
        n.checked_mul(1_000)
    } else {
        n.checked_mul(1_000_000)
    }
}

/// Decodes `&name;`, `&#123;` and `&#x7B;`; anything unrecognised stays literal.
pub(super) fn decode_entities(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or_default());
        let after = rest.get(amp + 1..).unwrap_or_default();
        let decoded = after
            .bytes()
            .take(33)
            .position(|b| b == b';')
            .and_then(|semi| {
                let name = after.get(..semi)?;
                Some((entity(name)?, semi + 1))
            });
        match decoded {
            Some((ch, used)) => {
                out.push(ch);
                rest = after.get(used..).unwrap_or_default();
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse::<u32>().ok()?,
        };
        return Some(
            char::from_u32(code)
                .filter(|&c| c != '\0')
                .unwrap_or('\u{FFFD}'),
        );
    }
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "middot" => '·',
        "bull" => '•',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "deg" => '°',
        "times" => '×',
        "shy" => '\u{AD}',
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Exporter
// ---------------------------------------------------------------------------------------------

/// Escapes text and attribute values: `& < > " '`.
pub(super) fn escape(text: &str, out: &mut String) {
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
}

pub(super) fn export(tree: &BookmarkTree) -> String {
    let title = match tree.extra.get("title") {
        Some(Value::String(title)) if !title.is_empty() => title.as_str(),
        _ => DEFAULT_TITLE,
    };
    let mut out = String::from(
        "<!DOCTYPE NETSCAPE-Bookmark-file-1>\n\
         <!-- This is an automatically generated file.\n     \
         It will be read and overwritten.\n     \
         DO NOT EDIT! -->\n\
         <META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=UTF-8\">\n\
         <TITLE>",
    );
    escape(title, &mut out);
    out.push_str("</TITLE>\n<H1>");
    escape(title, &mut out);
    out.push_str("</H1>\n\n<DL><p>\n");
    for node in &tree.roots {
        write_node(node, 1, &mut out);
    }
    out.push_str("</DL><p>\n");
    out
}

fn write_node(node: &Node, level: usize, out: &mut String) {
    let indent = "    ".repeat(level);
    match node {
        Node::Separator(separator) => {
            out.push_str(&indent);
            out.push_str("<HR");
            write_extra_attrs(&separator.extra, &[], out);
            out.push_str(">\n");
        }
        Node::Bookmark(bookmark) => {
            out.push_str(&indent);
            out.push_str("<DT><A HREF=\"");
            escape(&bookmark.url, out);
            out.push('"');
            let mut written = vec!["HREF"];
            write_date(out, &mut written, "ADD_DATE", bookmark.added);
            write_date(out, &mut written, "LAST_MODIFIED", bookmark.modified);
            write_date(out, &mut written, "LAST_VISIT", bookmark.visited);
            if let Some(keyword) = &bookmark.keyword {
                write_attr(out, &mut written, "SHORTCUTURL", keyword);
            }
            if !bookmark.tags.is_empty() {
                write_attr(out, &mut written, "TAGS", &bookmark.tags.join(","));
            }
            write_extra_attrs(&bookmark.extra, &written, out);
            out.push('>');
            escape(&bookmark.title, out);
            out.push_str("</A>\n");
            write_description(bookmark.description.as_deref(), &indent, out);
        }
        Node::Folder(folder) => {
            out.push_str(&indent);
            out.push_str("<DT><H3");
            let mut written = Vec::new();
            write_date(out, &mut written, "ADD_DATE", folder.added);
            write_date(out, &mut written, "LAST_MODIFIED", folder.modified);
            match folder.role {
                Some(FolderRole::Toolbar) => {
                    write_attr(out, &mut written, "PERSONAL_TOOLBAR_FOLDER", "true");
                }
                Some(FolderRole::Other) => {
                    write_attr(out, &mut written, "UNFILED_BOOKMARKS_FOLDER", "true");
                }
                _ => {}
            }
            write_extra_attrs(&folder.extra, &written, out);
            out.push('>');
            escape(&folder.title, out);
            out.push_str("</H3>\n");
            write_description(folder.description.as_deref(), &indent, out);
            out.push_str(&indent);
            out.push_str("<DL><p>\n");
            for child in &folder.children {
                write_node(child, level + 1, out);
            }
            out.push_str(&indent);
            out.push_str("</DL><p>\n");
        }
    }
}

fn write_attr(out: &mut String, written: &mut Vec<&'static str>, name: &'static str, value: &str) {
    let _ = write!(out, " {name}=\"");
    escape(value, out);
    out.push('"');
    written.push(name);
}

fn write_date(
    out: &mut String,
    written: &mut Vec<&'static str>,
    name: &'static str,
    micros: Option<i64>,
) {
    if let Some(micros) = micros {
        let _ = write!(out, " {name}=\"{}\"", micros.div_euclid(1_000_000));
        written.push(name);
    }
}

/// Writes the upper-case string extras (attributes an HTML import kept, like `ICON`) that no
/// mapped field already wrote.
fn write_extra_attrs(extra: &Extra, written: &[&str], out: &mut String) {
    for (name, value) in extra {
        let Value::String(value) = value else {
            continue;
        };
        let attribute_like = name.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
        if attribute_like && !written.contains(&name.as_str()) {
            let _ = write!(out, " {name}=\"");
            escape(value, out);
            out.push('"');
        }
    }
}

fn write_description(description: Option<&str>, indent: &str, out: &mut String) {
    if let Some(description) = description {
        out.push_str(indent);
        out.push_str("<DD>");
        escape(description, out);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities() {
        assert_eq!(
            decode_entities(
                "a &amp; b &lt;c&gt; &quot;&#39;&#x1F516;&#128278; &nbsp;&bogus; & &#xZZ;"
            ),
            "a & b <c> \"'🔖🔖 \u{A0}&bogus; & &#xZZ;"
        );
        // A multi-byte character within the look-ahead window.
        assert_eq!(
            decode_entities("&lt;tag&gt; 😀😀😀😀😀😀😀😀"),
            "<tag> 😀😀😀😀😀😀😀😀"
        );
        assert_eq!(decode_entities("&#0;&#xD800;"), "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn escaping_round_trips() {
        let mut out = String::new();
        escape("<a href=\"x\">Tom & Jerry's</a>", &mut out);
        assert_eq!(
            out,
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
        assert_eq!(decode_entities(&out), "<a href=\"x\">Tom & Jerry's</a>");
    }

    #[test]
    fn dates_scale() {
        assert_eq!(parse_date("1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(parse_date("1700000000123"), Some(1_700_000_000_123_000));
        assert_eq!(parse_date("1700000000123456"), Some(1_700_000_000_123_456));
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn tokenizer_is_lenient() {
        let mut t = Tokenizer::new("<DT><a href=x add_date='1'>T</A><h3 unclosed <DL>x < y");
        let mut names = Vec::new();
        while let Some(token) = t.next_token() {
            names.push(match token {
                Token::Start { name, attrs } => format!("<{name} {attrs:?}>"),
                Token::End { name } => format!("</{name}>"),
                Token::Text(text) => text.to_owned(),
            });
        }
        assert_eq!(
            names,
            [
                "<dt []>",
                "<a [(\"HREF\", \"x\"), (\"ADD_DATE\", \"1\")]>",
                "T",
                "</a>",
                "<h3 [(\"UNCLOSED\", \"\")]>",
                "<dl []>",
                "x < y"
            ]
        );
    }
}
