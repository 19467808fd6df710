//! What the server sends us passes through [`InboundFilter`] before it reaches tokio-xmpp's
//! XML parser. The filter changes the bytes in two cases.
//!
//! **XML nested too deep.** The stanza parser under tokio-xmpp builds elements recursively,
//! one stack frame per level, so a stanza nested a few thousand levels deep (about 7 bytes a
//! level, well within any server's stanza size limit, and relayed by Prosody) overflows a
//! thread's stack and aborts the process; everything that walks or drops the resulting tree
//! is recursive too. Closing the connection instead would not help: stream management would
//! deliver the same stanza again after the reconnect. So the filter keeps the stanza and cuts
//! out every element nested deeper than [`MAX_DEPTH`], tags, text and all. The result is still
//! well-formed, the stanza still counts for stream management, and the layers above see a
//! (malformed) stanza they reject with a log line. No legitimate stanza we handle comes near
//! the limit: the deepest, an OMEMO message forwarded from the archive, reaches depth 9.
//!
//! **A refused resumption without a counter.** A server that ended a session (it closed it
//! for a stream error, or another login replaced it) refuses to resume it with a `<failed/>`
//! that carries no `h` counter: XEP-0198 makes the counter optional, and Prosody leaves it out
//! then. The parser of xmpp-parsers 0.23 requires it, so tokio-xmpp 6 takes the refusal for a
//! broken connection, keeps the dead session's state, and asks to resume it again on every
//! reconnect, for ever: the client never gets online again. The filter adds `h='0'` to a
//! `<failed>` start tag at the top level of the stream that has no `h`. Only the server writes
//! there. tokio-xmpp uses the counter only to release the stanzas it acknowledges, and it
//! ignores one that lies behind its own count, as 0 does (unless the session had sent more
//! than 2³¹ stanzas). So the refusal is then handled as one with a counter that acknowledges
//! nothing new: a fresh session is bound, and what the old one had not confirmed counts as
//! lost with it (the OMEMO outbox sends its messages again).
//!
//! The filter also counts every refused resumption, with or without a counter, in
//! [`Refusals`], before tokio-xmpp has read it: a refusal's counter releases stanzas as if the
//! server had acknowledged them, and [`Delivery`](super::Delivery) must know that it was a
//! refusal that released them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The deepest element kept, counting the stream's root element as depth 1 and a stanza as 2.
pub(crate) const MAX_DEPTH: usize = 32;

/// Bytes read from the transport at a time.
const CHUNK: usize = 8 * 1024;

/// Where the scanner is in the XML syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data between tags.
    Text,
    /// Right after `<`, before we know what kind of markup follows.
    Lt,
    /// Inside a start tag; `quote` is the open attribute quote, if any.
    Open {
        quote: Option<u8>,
        slash: bool,
        in_name: bool,
    },
    /// Inside an end tag.
    Close,
    /// After `<!`, before we know which kind.
    Bang,
    /// Inside `<![CDATA[ ... ]]>`.
    Cdata,
    /// Inside `<!-- ... -->`.
    Comment,
    /// Inside `<! ... >` (a declaration; not allowed in XMPP, passed on for the parser).
    Declaration,
    /// Inside `<? ... ?>`.
    Instruction,
}

/// The byte-level filter: feed it the incoming bytes, it appends the ones to keep.
#[derive(Debug)]
pub(crate) struct Scanner {
    state: State,
    /// Depth of the element whose content we are in (0 outside the stream's root).
    depth: usize,
    /// Nesting inside the subtree being cut out; 0 while keeping.
    cutting: usize,
    /// Whether the current markup is being kept (decided at its first byte).
    keep_markup: bool,
    /// The start of the current start tag's name, to recognise a new stream header.
    name: [u8; 16],
    name_len: usize,
    /// The last two bytes, for the `]]>`, `-->` and `?>` terminators.
    last: [u8; 2],
    /// Subtrees cut out so far.
    cut: u64,
    /// Whether the current start tag is a child of the stream's root.
    top_level: bool,
    /// The current attribute name's first byte and length, and whether whitespace ended it.
    attr_first: u8,
    attr_len: usize,
    attr_ended: bool,
    /// Whether the current start tag has an `h` attribute.
    has_h: bool,
    /// The `/` of a top-level `<failed/>`, held back until the `>` after it.
    held_slash: bool,
    /// Counters added to `<failed>` so far.
    mended: u64,
    /// Top-level `<failed>` start tags so far.
    refused: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Text,
            depth: 0,
            cutting: 0,
            keep_markup: true,
            name: [0; 16],
            name_len: 0,
            last: [0; 2],
            cut: 0,
            top_level: false,
            attr_first: 0,
            attr_len: 0,
            attr_ended: false,
            has_h: false,
            held_slash: false,
            mended: 0,
            refused: 0,
        }
    }
}

impl Scanner {
    /// Subtrees cut out so far.
    pub(crate) fn cut(&self) -> u64 {
        self.cut
    }

    /// Counters added to a refused resumption so far.
    pub(crate) fn mended(&self) -> u64 {
        self.mended
    }

    /// Refused resumptions (top-level `<failed>`) read so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// Processes `input`, appending what is kept to `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &byte in input {
            self.byte(byte, out);
            self.last = [self.last[1], byte];
        }
    }

    fn byte(&mut self, byte: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Text => {
                if byte == b'<' {
                    // Kept or not depends on the next byte (a start tag at the limit is cut,
                    // an end tag there is kept), so `<` waits for it.
                    self.state = State::Lt;
                } else if self.cutting == 0 {
                    out.push(byte);
                }
            }
            State::Lt => {
                let (state, keep) = match byte {
                    b'/' => (State::Close, self.cutting == 0),
                    b'!' => (State::Bang, self.cutting == 0),
                    b'?' => (State::Instruction, self.cutting == 0),
                    _ => {
                        let keep = self.cutting == 0 && self.depth < MAX_DEPTH;
                        if !keep && self.cutting == 0 {
                            self.cut += 1;
                        }
                        self.name[0] = byte;
                        self.name_len = 1;
                        self.top_level = self.depth == 1;
                        self.attr_len = 0;
                        self.attr_ended = false;
                        self.has_h = false;
                        self.held_slash = false;
                        (
                            State::Open {
                                quote: None,
                                slash: false,
                                in_name: true,
                            },
                            keep,
                        )
                    }
                };
                self.keep_markup = keep;
                if keep {
                    out.extend_from_slice(&[b'<', byte]);
                }
                self.state = state;
            }
            _ => self.markup_byte(byte, out),
        }
    }

    /// A byte inside markup (the first one included).
    fn markup_byte(&mut self, byte: u8, out: &mut Vec<u8>) {
        if let State::Open {
            quote,
            slash,
            in_name,
        } = self.state
        {
            self.start_tag_byte(byte, quote, slash, in_name, out);
            return;
        }
        if self.keep_markup {
            out.push(byte);
        }
        match self.state {
            State::Close if byte == b'>' => {
                if self.cutting > 0 {
                    self.cutting -= 1;
                } else {
                    self.depth = self.depth.saturating_sub(1);
                }
                self.state = State::Text;
            }
            State::Bang => {
                self.state = match byte {
                    b'[' => State::Cdata,
                    b'-' => State::Comment,
                    b'>' => State::Text,
                    _ => State::Declaration,
                };
            }
            State::Cdata if byte == b'>' && self.last == *b"]]" => self.state = State::Text,
            State::Comment if byte == b'>' && self.last == *b"--" => self.state = State::Text,
            State::Declaration if byte == b'>' => self.state = State::Text,
            State::Instruction if byte == b'>' && self.last[1] == b'?' => self.state = State::Text,
            _ => {}
        }
    }

    /// A byte inside a start tag (after its first byte).
    fn start_tag_byte(
        &mut self,
        byte: u8,
        quote: Option<u8>,
        slash: bool,
        in_name: bool,
        out: &mut Vec<u8>,
    ) {
        let keep = self.keep_markup;
        if let Some(q) = quote {
            if keep {
                out.push(byte);
            }
            if byte == q {
                self.state = State::Open {
                    quote: None,
                    slash: false,
                    in_name: false,
                };
            }
            return;
        }
        let held_slash = std::mem::take(&mut self.held_slash);
        if byte == b'>' && keep && self.is_failed() {
            self.refused += 1;
            if !self.has_h {
                out.extend_from_slice(b" h='0'");
                self.mended += 1;
            }
        }
        if held_slash && keep {
            out.push(b'/');
        }
        if byte == b'/' && keep && self.is_failed() && !self.has_h {
            self.held_slash = true;
        } else if keep {
            out.push(byte);
        }
        let next = |slash, in_name| State::Open {
            quote: None,
            slash,
            in_name,
        };
        match byte {
            b'>' => self.end_start_tag(slash),
            b'"' | b'\'' => {
                self.state = State::Open {
                    quote: Some(byte),
                    slash: false,
                    in_name: false,
                }
            }
            b'/' => self.state = next(true, false),
            b' ' | b'\t' | b'\r' | b'\n' => {
                self.attr_ended = self.attr_len > 0;
                self.state = next(slash, false);
            }
            b'=' => {
                if self.attr_len == 1 && self.attr_first == b'h' {
                    self.has_h = true;
                }
                self.attr_len = 0;
                self.attr_ended = false;
                self.state = next(false, false);
            }
            _ => {
                if in_name {
                    if self.name_len < self.name.len() {
                        self.name[self.name_len] = byte;
                    }
                    self.name_len += 1;
                } else {
                    if self.attr_ended {
                        self.attr_len = 0;
                        self.attr_ended = false;
                    }
                    if self.attr_len == 0 {
                        self.attr_first = byte;
                    }
                    self.attr_len += 1;
                }
                self.state = next(false, in_name);
            }
        }
    }

    /// Whether the current start tag is a top-level `<failed>` (see the module
    /// documentation). Its name is complete once a `/` or `>` is reached.
    fn is_failed(&self) -> bool {
        self.top_level && self.name_len == 6 && self.name[..6] == *b"failed"
    }

    fn end_start_tag(&mut self, self_closing: bool) {
        self.state = State::Text;
        if self_closing {
            return;
        }
        if self.cutting > 0 || !self.keep_markup {
            self.cutting += 1;
            return;
        }
        // A stream header (the first, or a restart after StartTLS or SASL) opens a new root.
        let name = &self.name[..self.name_len.min(self.name.len())];
        if self.name_len == b"stream:stream".len() && name == b"stream:stream" {
            self.depth = 0;
        }
        self.depth += 1;
    }
}

/// The refused resumptions read on all of a connection's transports; cheap to clone. A
/// refusal is counted before the bytes that carry it are handed to the parser.
#[derive(Clone, Debug, Default)]
pub(crate) struct Refusals(Arc<AtomicU64>);

impl Refusals {
    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }
}

/// A transport whose incoming XML is passed through a [`Scanner`].
pub(crate) struct InboundFilter<S> {
    inner: S,
    scanner: Scanner,
    refusals: Refusals,
    scratch: Box<[u8]>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<S> InboundFilter<S> {
    pub(crate) fn new(inner: S, refusals: Refusals) -> Self {
        Self {
            inner,
            scanner: Scanner::default(),
            refusals,
            scratch: vec![0; CHUNK].into_boxed_slice(),
            out: Vec::with_capacity(CHUNK),
            out_pos: 0,
        }
    }

    /// The transport, for the TLS handshake after StartTLS (bytes not yet read are dropped,
    /// as the server sends none after `<proceed/>`).
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for InboundFilter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let input = read.filled();
            if input.is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            let (cut, mended, refused) = (
                this.scanner.cut(),
                this.scanner.mended(),
                this.scanner.refused(),
            );
            this.scanner.feed(input, &mut this.out);
            this.refusals.add(this.scanner.refused() - refused);
            if this.scanner.cut() > cut {
                tracing::warn!(
                    max = MAX_DEPTH,
                    "cut out XML nested deeper than the limit from an incoming stanza"
                );
            }
            if this.scanner.mended() > mended {
                tracing::info!(
                    "the server refused to resume the session without saying what it received; \
                     starting a fresh one"
                );
            }
            // If everything read was cut out, read again rather than report end of stream.
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for InboundFilter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                          xmlns:stream='http://etherx.jabber.org/streams' id='s1'>";

    fn filter(input: &str) -> String {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        scanner.feed(input.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn filter_bytewise(input: &str) -> String {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        for byte in input.as_bytes() {
            scanner.feed(std::slice::from_ref(byte), &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn nested(levels: usize, inner: &str) -> String {
        format!("{}{inner}{}", "<a>".repeat(levels), "</a>".repeat(levels))
    }

    #[test]
    fn ordinary_stanzas_pass_unchanged() {
        let input = format!(
            "{HEADER}<message to='a@b' id=\"x>y\"><body>1 &lt; 2 &amp; a>b</body>\
             <encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='a@b'>\
             <key rid='2' kex='true'>AAA=</key></keys></header><payload>BBB=</payload>\
             </encrypted><store xmlns='urn:xmpp:hints'/><x><![CDATA[<not> a tag]]></x>\
             </message><iq type='result' id='1'/>{}",
            nested(MAX_DEPTH - 2, "deep but allowed")
        );
        assert_eq!(filter(&input), input);
        assert_eq!(filter_bytewise(&input), input);
    }

    #[test]
    fn deeper_elements_are_cut_out_and_the_stream_goes_on() {
        let deep = nested(10_000, "text");
        let input = format!(
            "{HEADER}<message from='m@x'><encrypted>{deep}</encrypted></message>\
             <message><body>next</body></message>"
        );
        for output in [filter(&input), filter_bytewise(&input)] {
            // Stanza at depth 2, <encrypted> at 3: the <a> elements fill depths 4..=MAX.
            let kept = nested(MAX_DEPTH - 3, "");
            assert_eq!(
                output,
                format!(
                    "{HEADER}<message from='m@x'><encrypted>{kept}</encrypted></message>\
                     <message><body>next</body></message>"
                )
            );
        }
    }

    #[test]
    fn cut_out_subtrees_with_attributes_and_self_closing_tags_stay_balanced() {
        let inner = "<b x='>' y=\"</a>\"/><c>t</c><![CDATA[</a>]]>";
        let input = format!(
            "{HEADER}<message>{}</message><message/>",
            nested(MAX_DEPTH + 5, inner)
        );
        let output = filter_bytewise(&input);
        assert_eq!(
            output,
            format!(
                "{HEADER}<message>{}</message><message/>",
                nested(MAX_DEPTH - 2, "")
            )
        );
        assert_eq!(filter(&input), output);
    }

    #[test]
    fn a_stream_restart_opens_a_new_root() {
        let allowed = nested(MAX_DEPTH - 2, "x");
        let input =
            format!("{HEADER}<features/>{HEADER}<features/>{HEADER}<message>{allowed}</message>");
        assert_eq!(filter(&input), input);
    }

    #[test]
    fn a_hostile_sibling_flood_at_the_limit_is_counted() {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        let siblings = "<z/><z>t</z>".repeat(100);
        let input = format!(
            "{HEADER}<message>{}</message>",
            nested(MAX_DEPTH - 2, &siblings)
        );
        scanner.feed(input.as_bytes(), &mut out);
        assert_eq!(scanner.cut(), 200);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{HEADER}<message>{}</message>", nested(MAX_DEPTH - 2, ""))
        );
    }

    /// What the filter makes of a top-level element `element` (whole and byte by byte).
    fn top_level(element: &str) -> String {
        let input = format!("{HEADER}{element}");
        let (whole, bytewise) = (filter(&input), filter_bytewise(&input));
        assert_eq!(whole, bytewise);
        whole[HEADER.len()..].to_owned()
    }

    #[test]
    fn a_refused_resumption_without_a_counter_gets_one() {
        let condition = "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>";
        // As Prosody writes it.
        assert_eq!(
            top_level(&format!(
                "<failed xmlns='urn:xmpp:sm:3'>{condition}</failed>"
            )),
            format!("<failed xmlns='urn:xmpp:sm:3' h='0'>{condition}</failed>")
        );
        assert_eq!(
            top_level("<failed xmlns=\"urn:xmpp:sm:3\"/>"),
            "<failed xmlns=\"urn:xmpp:sm:3\" h='0'/>"
        );
        assert_eq!(top_level("<failed/>"), "<failed h='0'/>");
        // Attributes that only look like `h`.
        assert_eq!(
            top_level("<failed xmlns='urn:xmpp:sm:3' hh='1' xh=\"2\" a='h=3'/>"),
            "<failed xmlns='urn:xmpp:sm:3' hh='1' xh=\"2\" a='h=3' h='0'/>"
        );
    }

    #[test]
    fn a_counter_that_is_there_and_failed_elements_inside_stanzas_are_left_alone() {
        for element in [
            "<failed xmlns='urn:xmpp:sm:3' h='5'/>",
            "<failed h = \"5\" xmlns='urn:xmpp:sm:3'><item-not-found/></failed>",
            "<failed\nh='5'\n/>",
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            "<failedx/>",
            "<message><failed xmlns='urn:xmpp:sm:3'/><body>failed</body></message>",
            "<iq type='result'><failed xmlns='urn:xmpp:sm:3'>x</failed></iq>",
        ] {
            assert_eq!(top_level(element), element);
        }
        let mut scanner = Scanner::default();
        scanner.feed(
            format!("{HEADER}<failed h='1'/><message><failed/></message>").as_bytes(),
            &mut Vec::new(),
        );
        assert_eq!(scanner.mended(), 0);
        scanner.feed(b"<failed/>", &mut Vec::new());
        assert_eq!(scanner.mended(), 1);
    }

    #[test]
    fn every_top_level_refusal_is_counted_once() {
        let mut scanner = Scanner::default();
        let input = format!(
            "{HEADER}<failed h='1'/><message><failed/></message><failedx/>\
             <failed xmlns='urn:xmpp:sm:3'><item-not-found/></failed><failed/>"
        );
        // Split everywhere: a tag cut in two is still counted once.
        for byte in input.as_bytes() {
            scanner.feed(std::slice::from_ref(byte), &mut Vec::new());
        }
        assert_eq!(scanner.refused(), 3);
        assert_eq!(scanner.mended(), 2);
    }

    /// Why the filter adds the counter: the parser tokio-xmpp uses refuses `<failed/>` without
    /// it. When this test fails, a newer xmpp-parsers reads the counter as optional and the
    /// mend can go.
    #[test]
    fn the_parser_needs_the_counter_that_the_filter_adds() {
        use tokio_xmpp::parsers::minidom::Element;
        use tokio_xmpp::parsers::sm::Failed;
        let parse = |xml: &str| Failed::try_from(xml.parse::<Element>().unwrap());
        let refused = "<failed xmlns='urn:xmpp:sm:3'><item-not-found \
                       xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>";
        assert!(
            parse(refused).is_err(),
            "xmpp-parsers reads <failed/> without h now"
        );
        let mended = top_level(refused);
        assert_eq!(parse(&mended).unwrap().h, Some(0));
    }

    #[tokio::test]
    async fn the_transport_wrapper_filters_what_it_reads() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, client) = tokio::io::duplex(64);
        let input = format!("{HEADER}<message>{}</message>", nested(5_000, "x"));
        let expected = format!("{HEADER}<message>{}</message>", nested(MAX_DEPTH - 2, ""));
        let writer = tokio::spawn(async move {
            server.write_all(input.as_bytes()).await.unwrap();
            server.shutdown().await.unwrap();
        });
        let mut limited = InboundFilter::new(client, Refusals::default());
        let mut read = String::new();
        limited.read_to_string(&mut read).await.unwrap();
        writer.await.unwrap();
        assert_eq!(read, expected);
    }

    /// A refusal is counted by the time the parser can see it, on the connection's shared
    /// counter.
    #[tokio::test]
    async fn a_refusal_is_counted_before_it_is_read() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, client) = tokio::io::duplex(1024);
        let refusals = Refusals::default();
        let mut filtered = InboundFilter::new(client, refusals.clone());
        let mut buf = vec![0; 1024];
        server.write_all(HEADER.as_bytes()).await.unwrap();
        let n = filtered.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], HEADER.as_bytes());
        assert_eq!(refusals.count(), 0);
        server.write_all(b"<failed h='4'/>").await.unwrap();
        let n = filtered.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"<failed h='4'/>");
        assert_eq!(refusals.count(), 1);
        // Another transport of the same connection adds to the same count.
        let (mut server2, client2) = tokio::io::duplex(1024);
        let mut second = InboundFilter::new(client2, refusals.clone());
        server2
            .write_all(format!("{HEADER}<failed/>").as_bytes())
            .await
            .unwrap();
        server2.shutdown().await.unwrap();
        let mut read = String::new();
        second.read_to_string(&mut read).await.unwrap();
        assert_eq!(read, format!("{HEADER}<failed h='0'/>"));
        assert_eq!(refusals.count(), 2);
    }
}
