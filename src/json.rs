//! A one-pass JSON reader, shared by the extractor and the transform.
//!
//! The extractor reads each page's envelope with it as the page arrives:
//! the whole body is checked once (a broken body is retried), and the
//! members of every record are noted on a [`RecordTape`] as byte offsets.
//! The transform then reads the records from the tape without walking
//! their text again; it uses the reader itself only for nested objects
//! and arrays. Strings are skipped eight bytes at a time; errors name the
//! byte where the text breaks.

use std::borrow::Cow;
use std::ops::Range;

/// Nesting deeper than this is refused (as serde_json does), so that a
/// hostile record cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// The bytes that end a run of plain string characters: the closing
/// quote, a backslash, and the control characters JSON forbids in strings.
const STRING_STOP: [bool; 256] = {
    let mut stop = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        stop[b] = true;
        b += 1;
    }
    stop[b'"' as usize] = true;
    stop[b'\\' as usize] = true;
    stop
};

/// The offset of the first byte of `bytes` in [`STRING_STOP`], found eight
/// bytes at a time: one pass finds the closing quote, an escape or a
/// control character. In each test the lowest flagged byte is exact (a
/// borrow only runs upwards from a byte that matches), so the lowest of the
/// three is the first stop.
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for (index, chunk) in chunks.by_ref().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | word.wrapping_sub(ONES * 0x20) & !word)
            & HIGH;
        if found != 0 {
            return Some(index * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let rest = bytes.len() - chunks.remainder().len();
    chunks
        .remainder()
        .iter()
        .position(|&b| STRING_STOP[usize::from(b)])
        .map(|offset| rest + offset)
}

/// `a == b`, comparing a key of up to 16 bytes as two overlapping words
/// instead of calling `memcmp`: the lookup of every member's key cost 3%
/// of a run's CPU time, half of it in the call. Keys are short: a record
/// reader and the transform compare them by the million.
#[inline]
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(s: &[u8], at: usize) -> Option<[u8; N]> {
        s.get(at..at + N).and_then(|w| w.try_into().ok())
    }
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => {
            word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, len - 4) == word::<4>(b, len - 4)
        }
        8..=16 => {
            word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, len - 8) == word::<8>(b, len - 8)
        }
        _ => a == b,
    }
}

/// What kind of JSON value a [`Raw`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool(bool),
    Number,
    /// A string; `escaped` when it holds a backslash escape.
    Str {
        escaped: bool,
    },
    Object,
    Array,
}

/// One JSON value as written in the record, with its kind.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    /// The value's exact text (quotes included for a string).
    pub text: &'a str,
    pub kind: Kind,
}

/// Where and why a text is not valid JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
}

/// [`ScanError::what`] of nesting deeper than [`MAX_DEPTH`].
const TOO_DEEP: &str = "nested too deeply";

impl ScanError {
    /// True when the text nests deeper than [`MAX_DEPTH`]: not a text cut
    /// short, the same on every read.
    pub fn is_too_deep(&self) -> bool {
        self.what == TOO_DEEP
    }
}

/// The members of the JSON object `text`, in order, keys decoded.
pub fn object_members(text: &str) -> Result<Vec<(Cow<'_, str>, Raw<'_>)>, ScanError> {
    let mut reader = Reader::new(text);
    if reader.next_byte() != Some(b'{') {
        return Err(reader.error("expected a JSON object"));
    }
    let mut members = Vec::with_capacity(16);
    reader.object(|reader, key| {
        let value = reader.value()?;
        members.push((key, value));
        Ok(())
    })?;
    reader.end()?;
    Ok(members)
}

/// The items of the JSON array `text`, in order.
pub fn array_items(text: &str) -> Result<Vec<Raw<'_>>, ScanError> {
    let mut reader = Reader::new(text);
    if reader.next_byte() != Some(b'[') {
        return Err(reader.error("expected a JSON array"));
    }
    let mut items = Vec::new();
    reader.array(|reader| {
        items.push(reader.value()?);
        Ok(())
    })?;
    reader.end()?;
    Ok(items)
}

/// Decodes a string value or key (quotes included) that holds escapes.
/// A lone UTF-16 surrogate escape (`"\ud83d"`, half an emoji, which .NET
/// serializers write for a string cut in the middle of a character)
/// becomes U+FFFD, as browsers' and serde_json's lossy decoders make it,
/// rather than failing the record (and so the stream).
pub fn unescape(text: &str) -> Result<String, serde_json::Error> {
    serde_json::from_str::<String>(text).or_else(|e| unescape_lossy(text).ok_or(e))
}

/// [`unescape`] with lone surrogates as U+FFFD; `None` for anything else
/// that is not a JSON string.
#[cold]
fn unescape_lossy(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let bytes = inner.as_bytes();
    let mut out = String::with_capacity(inner.len());
    let mut pos = 0;
    let hex = |at: usize| -> Option<u32> {
        let digits = inner.get(at..at + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok()
    };
    while pos < bytes.len() {
        let run = bytes[pos..]
            .iter()
            .position(|&b| b == b'\\' || b == b'"' || b < 0x20)
            .map_or(bytes.len(), |offset| pos + offset);
        out.push_str(inner.get(pos..run)?);
        pos = run;
        if pos == bytes.len() {
            break;
        }
        if bytes[pos] != b'\\' {
            return None;
        }
        let escape = *bytes.get(pos + 1)?;
        pos += 2;
        let simple = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex(pos)?;
                pos += 4;
                let c = match unit {
                    0xD800..=0xDBFF => {
                        let low = (bytes.get(pos..pos + 2) == Some(&b"\\u"[..]))
                            .then(|| hex(pos + 2))
                            .flatten()
                            .filter(|low| (0xDC00..=0xDFFF).contains(low));
                        match low {
                            Some(low) => {
                                pos += 6;
                                char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                            }
                            None => None,
                        }
                    }
                    _ => char::from_u32(unit),
                };
                c.unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            _ => return None,
        };
        out.push(simple);
    }
    Some(out)
}

/// A byte range of the page body, kept small: a tape holds one per key and
/// per value of every record.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One member of a record's top-level object, located in the page body.
#[derive(Debug, Clone, Copy)]
struct MemberSpan {
    /// The key, quotes included.
    key: Span,
    key_escaped: bool,
    value: Span,
    kind: Kind,
}

/// One item of a list, located in the page body.
#[derive(Debug, Clone)]
struct ItemSpan {
    text: Span,
    /// Its members' place in [`RecordTape::members`], for an object.
    members: Option<Span>,
}

/// The records of a list page, read once: where each item's text is and,
/// for an object, where each of its members' key and value are. Offsets
/// point into the body the tape was read from.
#[derive(Debug, Default)]
pub struct RecordTape {
    items: Vec<ItemSpan>,
    members: Vec<MemberSpan>,
}

impl RecordTape {
    /// Records on the tape.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keeps the first `len` records.
    pub fn truncate(&mut self, len: usize) {
        self.items.truncate(len);
        let kept = self
            .items
            .iter()
            .rev()
            .find_map(|item| item.members)
            .map_or(0, |m| m.end as usize);
        self.members.truncate(kept);
    }

    /// Empties the tape, keeping its memory.
    pub fn clear(&mut self) {
        self.items.clear();
        self.members.clear();
    }

    /// The JSON text of record `index` in `body`.
    pub fn text<'a>(&self, body: &'a str, index: usize) -> &'a str {
        self.items
            .get(index)
            .and_then(|item| body.get(item.text.range()))
            .unwrap_or_default()
    }

    /// The value of record `index`'s top-level member `key`, ASCII case
    /// ignored (`id` finds `Id`); a key written with escapes is not matched.
    pub fn member<'a>(&self, body: &'a str, index: usize, key: &str) -> Option<Raw<'a>> {
        let span = self.items.get(index)?.members?;
        let bytes = body.as_bytes();
        self.members
            .get(span.range())?
            .iter()
            .find(|m| {
                !m.key_escaped
                    && bytes
                        .get(m.key.start as usize + 1..(m.key.end as usize).saturating_sub(1))
                        .is_some_and(|k| k.eq_ignore_ascii_case(key.as_bytes()))
            })
            .map(|m| Raw {
                text: body.get(m.value.range()).unwrap_or_default(),
                kind: m.kind,
            })
    }

    /// The members of record `index`, keys decoded, into `out` (emptied
    /// first). False when the record is not an object.
    pub fn members<'a>(
        &self,
        body: &'a str,
        index: usize,
        out: &mut Vec<(Cow<'a, str>, Raw<'a>)>,
    ) -> Result<bool, ScanError> {
        out.clear();
        let Some(span) = self.items.get(index).and_then(|item| item.members) else {
            return Ok(false);
        };
        let spans = self.members.get(span.range()).unwrap_or_default();
        for member in spans {
            let key_text = body.get(member.key.range()).unwrap_or_default();
            let key = if member.key_escaped {
                Cow::Owned(unescape(key_text).map_err(|_| ScanError {
                    what: "invalid escape in a key",
                    at: member.key.start as usize,
                })?)
            } else {
                Cow::Borrowed(
                    key_text
                        .get(1..key_text.len().saturating_sub(1))
                        .unwrap_or_default(),
                )
            };
            let value = Raw {
                text: body.get(member.value.range()).unwrap_or_default(),
                kind: member.kind,
            };
            out.push((key, value));
        }
        Ok(true)
    }
}

/// A key as read: its span (quotes included) and whether it has escapes.
#[derive(Debug, Clone, Copy)]
struct Key {
    start: usize,
    end: usize,
    escaped: bool,
}

/// A pull reader over one JSON text. Callers walk objects and arrays with
/// callbacks that read each member's or item's value.
pub struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Reader {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
        }
    }

    pub fn error(&self, what: &'static str) -> ScanError {
        ScanError { what, at: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips whitespace and returns the next byte without reading it.
    pub fn next_byte(&mut self) -> Option<u8> {
        self.whitespace();
        self.peek()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Checks that only whitespace is left.
    pub fn end(&mut self) -> Result<(), ScanError> {
        self.whitespace();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.error("trailing characters"))
        }
    }

    /// Reads (and checks) the value at the current position.
    pub fn value(&mut self) -> Result<Raw<'a>, ScanError> {
        self.whitespace();
        let start = self.pos;
        let kind = match self.peek() {
            Some(b'"') => Kind::Str {
                escaped: self.string()?,
            },
            Some(b'{') => {
                self.object(|reader, _| reader.value().map(drop))?;
                Kind::Object
            }
            Some(b'[') => {
                self.array(|reader| reader.value().map(drop))?;
                Kind::Array
            }
            Some(b'n') => {
                self.literal(b"null")?;
                Kind::Null
            }
            Some(b't') => {
                self.literal(b"true")?;
                Kind::Bool(true)
            }
            Some(b'f') => {
                self.literal(b"false")?;
                Kind::Bool(false)
            }
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                Kind::Number
            }
            None => return Err(self.error("unexpected end of the record")),
            Some(_) => return Err(self.error("expected a JSON value")),
        };
        // Every position the reader stops at follows an ASCII byte, so it is
        // a character boundary.
        let text = self.text.get(start..self.pos).unwrap_or_default();
        Ok(Raw { text, kind })
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(())
    }

    /// Skips a string starting at the opening quote; true if it has escapes.
    /// Control characters and malformed escapes are refused, as in any
    /// JSON parser.
    fn string(&mut self) -> Result<bool, ScanError> {
        self.pos += 1;
        let mut escaped = false;
        loop {
            let Some(offset) = string_stop(&self.bytes[self.pos..]) else {
                self.pos = self.bytes.len();
                return Err(self.error("unterminated string"));
            };
            self.pos += offset;
            match self.bytes[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(self.error("control character in a string")),
            }
        }
    }

    /// Reads the escape at a backslash: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`,
    /// `\r`, `\t` or `\u` and four hex digits.
    fn escape(&mut self) -> Result<(), ScanError> {
        let at = self.pos;
        let len = match self.bytes.get(self.pos + 1) {
            None => {
                self.pos = self.bytes.len();
                return Err(self.error("unterminated string"));
            }
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
            Some(b'u') => {
                let hex = self.bytes.get(self.pos + 2..self.pos + 6);
                match hex {
                    Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => 6,
                    Some(_) => {
                        return Err(ScanError {
                            what: "invalid escape",
                            at,
                        });
                    }
                    None => {
                        self.pos = self.bytes.len();
                        return Err(self.error("unterminated string"));
                    }
                }
            }
            Some(_) => {
                return Err(ScanError {
                    what: "invalid escape",
                    at,
                });
            }
        };
        self.pos += len;
        Ok(())
    }

    fn key(&mut self) -> Result<Key, ScanError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string key"));
        }
        let start = self.pos;
        let escaped = self.string()?;
        Ok(Key {
            start,
            end: self.pos,
            escaped,
        })
    }

    fn decode(&self, key: Key) -> Result<Cow<'a, str>, ScanError> {
        let text = self.text.get(key.start..key.end).unwrap_or_default();
        if key.escaped {
            unescape(text).map(Cow::Owned).map_err(|_| ScanError {
                what: "invalid escape in a key",
                at: key.start,
            })
        } else {
            Ok(Cow::Borrowed(
                text.get(1..text.len().saturating_sub(1))
                    .unwrap_or_default(),
            ))
        }
    }

    fn enter(&mut self) -> Result<(), ScanError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(TOO_DEEP));
        }
        self.pos += 1;
        Ok(())
    }

    /// Walks the object starting at `{`: `member` gets each key, decoded,
    /// and must read the value that follows it.
    pub fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.object_keys(
            &mut (),
            |_, _| None,
            |reader, _, key| {
                let key = reader.decode(key)?;
                member(reader, key)
            },
        )
    }

    /// Walks the object starting at `{`: `member` gets each key's span and
    /// must read the value that follows it, with `state` to note it in.
    /// `expected(state, i)` may name where an earlier object spelled its
    /// `i`-th key (quotes included, no escape): when the same bytes are
    /// here, the key is taken without scanning it.
    fn object_keys<S>(
        &mut self,
        state: &mut S,
        expected: impl Fn(&S, usize) -> Option<Span>,
        mut member: impl FnMut(&mut Self, &mut S, Key) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.enter()?;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        for index in 0.. {
            self.whitespace();
            let start = self.pos;
            let known = expected(state, index).and_then(|span| {
                let spelled = self.bytes.get(span.range())?;
                let here = self.bytes.get(start..start + spelled.len())?;
                same_key(spelled, here).then_some(spelled.len())
            });
            let key = match known {
                // Both quotes matched, and nothing between them ends a
                // string: the same key, complete.
                Some(len) => {
                    self.pos += len;
                    Key {
                        start,
                        end: self.pos,
                        escaped: false,
                    }
                }
                None => self.key()?,
            };
            self.whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.pos += 1;
            member(self, state, key)?;
            self.whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                None => return Err(self.error("unexpected end of the record")),
                Some(_) => return Err(self.error("expected `,` or `}`")),
            }
        }
        Ok(())
    }

    /// Walks the array starting at `[`: `item` must read each item.
    pub fn array(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.enter()?;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            item(self)?;
            self.whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                None => return Err(self.error("unexpected end of the record")),
                Some(_) => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// Reads the array of records starting at `[` onto `tape` (emptied
    /// first), noting each object's members.
    pub fn records(&mut self, tape: &mut RecordTape) -> Result<(), ScanError> {
        if u32::try_from(self.bytes.len()).is_err() {
            return Err(self.error("a page body over 4 GiB"));
        }
        tape.clear();
        let offset = |at: usize| at as u32;
        // Where the members of the last object record start: the records
        // of a page nearly always spell the same keys in the same order.
        let mut previous: Option<usize> = None;
        self.array(|reader| {
            reader.whitespace();
            let start = reader.pos;
            let members = if reader.peek() == Some(b'{') {
                let first = tape.members.len();
                let expected = |tape: &RecordTape, index: usize| {
                    let at = previous? + index;
                    // Only that record's members, not this one's.
                    let member = tape.members.get(at).filter(|_| at < first)?;
                    (!member.key_escaped).then_some(member.key)
                };
                reader.object_keys(tape, expected, |reader, tape, key| {
                    if key.escaped {
                        reader.decode(key)?;
                    }
                    let value = reader.value()?;
                    let value_start = reader.pos - value.text.len();
                    tape.members.push(MemberSpan {
                        key: Span {
                            start: offset(key.start),
                            end: offset(key.end),
                        },
                        key_escaped: key.escaped,
                        value: Span {
                            start: offset(value_start),
                            end: offset(reader.pos),
                        },
                        kind: value.kind,
                    });
                    Ok(())
                })?;
                previous = Some(first);
                Some(Span {
                    start: offset(first),
                    end: offset(tape.members.len()),
                })
            } else {
                reader.value()?;
                None
            };
            tape.items.push(ItemSpan {
                text: Span {
                    start: offset(start),
                    end: offset(reader.pos),
                },
                members,
            });
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for the mutation tests.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % bound.max(1)
        }

        /// `seed` with 1 to `edits` characters deleted, inserted or
        /// replaced (by characters of `alphabet`).
        fn mutate(&mut self, seed: &str, alphabet: &[char], edits: usize) -> String {
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..1 + self.below(edits) {
                let at = self.below(chars.len() + 1);
                match self.below(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, alphabet[self.below(alphabet.len())]),
                    _ if at < chars.len() => chars[at] = alphabet[self.below(alphabet.len())],
                    _ => {}
                }
            }
            chars.into_iter().collect()
        }
    }

    fn kinds(text: &str) -> Vec<(String, Kind, String)> {
        object_members(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.kind, v.text.to_owned()))
            .collect()
    }

    #[test]
    fn string_stop_finds_the_first_stop_byte_at_any_offset() {
        let plain = "aé€z~\u{7f}\u{80}\u{ff}".as_bytes();
        for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for len in 0..40 {
                let mut bytes: Vec<u8> = plain.iter().copied().cycle().take(len).collect();
                assert_eq!(string_stop(&bytes), None, "{bytes:?}");
                bytes.push(stop);
                // Stops after the first must not hide it, nor bytes that
                // borrow in the arithmetic (0x00, 0x20, 0x21, 0xff) fake one.
                bytes.extend_from_slice(&[0x00, b'"', 0x20, 0x21, 0xff, b'\\', 0x01]);
                let expected = bytes.iter().position(|&b| STRING_STOP[usize::from(b)]);
                assert_eq!(string_stop(&bytes), expected, "{bytes:?}");
                assert_eq!(expected, Some(len));
            }
        }
        assert_eq!(string_stop(b" !#[]~\x7f"), None);
    }

    #[test]
    fn reads_members_with_their_kinds_and_exact_text() {
        let members = kinds(
            r#" { "id" : 1, "n":-2.5e3, "s":"Ольга", "e":"a\"b", "z":null, "t":true, "f":false, "o":{"a":[1,{"b":"}"}]}, "a":[ ], "k\u00e9":0 } "#,
        );
        let expected = [
            ("id", Kind::Number, "1"),
            ("n", Kind::Number, "-2.5e3"),
            ("s", Kind::Str { escaped: false }, "\"Ольга\""),
            ("e", Kind::Str { escaped: true }, r#""a\"b""#),
            ("z", Kind::Null, "null"),
            ("t", Kind::Bool(true), "true"),
            ("f", Kind::Bool(false), "false"),
            ("o", Kind::Object, r#"{"a":[1,{"b":"}"}]}"#),
            ("a", Kind::Array, "[ ]"),
            ("ké", Kind::Number, "0"),
        ];
        assert_eq!(members.len(), expected.len());
        for ((key, kind, text), (k, want_kind, t)) in members.iter().zip(expected) {
            assert_eq!((key.as_str(), *kind, text.as_str()), (k, want_kind, t));
        }
    }

    #[test]
    fn reads_array_items() {
        let items = array_items(r#"[{"id":1}, null, "x", [2]]"#).unwrap_or_else(|e| panic!("{e}"));
        let texts: Vec<&str> = items.iter().map(|r| r.text).collect();
        assert_eq!(texts, [r#"{"id":1}"#, "null", "\"x\"", "[2]"]);
    }

    #[test]
    fn reports_where_the_text_breaks() {
        let cases = [
            ("1", "expected a JSON object at byte 0"),
            (r#"{"a":1"#, "unexpected end of the record at byte 6"),
            (r#"{"a" 1}"#, "expected `:` at byte 5"),
            (r#"{"a":01}"#, "expected `,` or `}` at byte 6"),
            (r#"{"a":1.}"#, "invalid number at byte 7"),
            (r#"{"a":nul}"#, "invalid literal at byte 5"),
            (r#"{"a":"x}"#, "unterminated string at byte 8"),
            (r#"{a:1}"#, "expected a string key at byte 1"),
            (r#"{"a":[1,]}"#, "expected a JSON value at byte 8"),
            (r#"{"a":1} x"#, "trailing characters at byte 8"),
            (r#"{"a":-}"#, "invalid number at byte 6"),
            (r#"{"a":"\"#, "unterminated string at byte 7"),
            (
                "{\"a\":\"x\ty\"}",
                "control character in a string at byte 7",
            ),
            (r#"{"a":"x\qy"}"#, "invalid escape at byte 7"),
            (r#"{"a":"\u00g9"}"#, "invalid escape at byte 6"),
        ];
        for (text, message) in cases {
            let got = object_members(text).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(got, Err(message.to_owned()), "{text}");
        }
    }

    /// Mutated records (bytes deleted, inserted, replaced) are accepted by
    /// this reader exactly when serde_json accepts them, escapes and
    /// control characters included. The alphabet leaves out what is
    /// checked only when a value is used (out-of-range numbers, lone
    /// surrogates: no `d` to spell one).
    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let seed = r#"{"id":12,"name":"Ольга \"Chen\"","a":[1,{"b":null,"c":[true,false]}],"d":{"e":-0.5e2,"f":"\u00e9\n"},"g":[]}"#;
        let alphabet: Vec<char> = "{}[]\":, 0123456789.-+abefnlrstu\\/\t\u{1}"
            .chars()
            .collect();
        let mut random = Lcg(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let text = random.mutate(seed, &alphabet, 3);
            let ours = object_members(&text).is_ok();
            let serde =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).is_ok();
            assert_eq!(ours, serde, "{text}");
            accepted += usize::from(ours);
        }
        assert!(
            accepted > 1000,
            "the mutations keep some records valid: {accepted}"
        );
    }

    /// A record read after one with the same keys takes them without
    /// scanning them: mutated copies of a record, read after it, are
    /// accepted exactly when serde_json accepts them and give back the same
    /// members as when read on their own.
    #[test]
    fn a_key_spelled_as_in_the_record_before_is_read_exactly() {
        let seed = r#"{"id":1,"idx":"a","k\u00e9":2,"name":"Ольга","o":{"id":3}}"#;
        let alphabet: Vec<char> = "{}\":,1adeikx\\u\t".chars().collect();
        let mut random = Lcg(0x2545_F491_4F6C_DD1D);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let record = random.mutate(seed, &alphabet, 1);
            let body = format!("[{seed},{record}]");
            let mut tape = RecordTape::default();
            let ours = Reader::new(&body).records(&mut tape).is_ok();
            let serde =
                serde_json::from_str::<Vec<serde_json::Map<String, serde_json::Value>>>(&body)
                    .is_ok();
            assert_eq!(ours, serde, "{record}");
            if ours {
                accepted += 1;
                let mut members = Vec::new();
                assert!(tape.members(&body, 1, &mut members).unwrap_or(false));
                let alone = object_members(&record).unwrap_or_else(|e| panic!("{e}"));
                let seen = |m: &[(Cow<str>, Raw)]| -> Vec<(String, Kind, String)> {
                    m.iter()
                        .map(|(k, v)| (k.to_string(), v.kind, v.text.to_owned()))
                        .collect()
                };
                assert_eq!(seen(&members), seen(&alone), "{record}");
            }
        }
        assert!(accepted > 1000, "some mutations stay valid: {accepted}");
    }

    /// A page's records read onto a tape give back the same members as
    /// reading each record on its own.
    #[test]
    fn a_tape_locates_each_records_members() {
        let body = r#"[ {"id":1,"k\u00e9":"a\"b","o":{"x":[1]}} , 7, {} ,{"n":null}]"#;
        let mut reader = Reader::new(body);
        let mut tape = RecordTape::default();
        reader.records(&mut tape).unwrap_or_else(|e| panic!("{e}"));
        reader.end().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tape.len(), 4);
        let texts: Vec<&str> = (0..4).map(|i| tape.text(body, i)).collect();
        assert_eq!(
            texts,
            [
                r#"{"id":1,"k\u00e9":"a\"b","o":{"x":[1]}}"#,
                "7",
                "{}",
                r#"{"n":null}"#
            ]
        );
        let mut members = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let is_object = tape
                .members(body, i, &mut members)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(is_object, text.starts_with('{'), "{text}");
            if is_object {
                let alone = object_members(text).unwrap_or_else(|e| panic!("{e}"));
                let seen = |m: &[(Cow<str>, Raw)]| -> Vec<(String, Kind, String)> {
                    m.iter()
                        .map(|(k, v)| (k.to_string(), v.kind, v.text.to_owned()))
                        .collect()
                };
                assert_eq!(seen(&members), seen(&alone), "{text}");
            }
        }
        let id = |i: usize, key: &str| tape.member(body, i, key).map(|v| v.text);
        assert_eq!(id(0, "id"), Some("1"));
        assert_eq!(id(0, "ID"), Some("1"));
        assert_eq!(id(0, "o"), Some(r#"{"x":[1]}"#));
        assert_eq!(id(0, "ké"), None, "an escaped key is not matched");
        assert_eq!(id(1, "id"), None, "not an object");
        assert_eq!(id(3, "id"), None);
        tape.truncate(2);
        assert_eq!(tape.len(), 2);
        assert!(!tape.members(body, 1, &mut members).unwrap_or(true));
        assert_eq!(members.len(), 0);
    }

    #[test]
    fn a_lone_surrogate_escape_decodes_as_the_replacement_character() {
        let decoded = |text: &str| unescape(text).map_err(|e| e.to_string());
        for (text, expected) in [
            (r#""broken \ud83d end""#, "broken \u{fffd} end"),
            (r#""x\udc00""#, "x\u{fffd}"),
            (r#""\ud83d\ud83d\ude00""#, "\u{fffd}😀"),
            (r#""\ud83d\n\u00e9\"\/\\""#, "\u{fffd}\né\"/\\"),
            (r#""\ud83d\u0041""#, "\u{fffd}A"),
            (r#""\ud83d""#, "\u{fffd}"),
            // A whole pair, and no surrogate at all, as before.
            (r#""\ud83d\ude00 ok""#, "😀 ok"),
            (r#""tab\there""#, "tab\there"),
        ] {
            assert_eq!(decoded(text).as_deref(), Ok(expected), "{text}");
        }
        // Still not strings.
        for text in [r#""a\qb""#, r#""\u12""#, "\"open", "\"ctl\u{1}\""] {
            assert!(decoded(text).is_err(), "{text}");
        }
    }

    #[test]
    fn refuses_nesting_deeper_than_the_limit() {
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let err = object_members(&deep).map(|_| ()).map_err(|e| e.what);
        assert_eq!(err, Err("nested too deeply"));
        let fine = format!(r#"{{"a":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(object_members(&fine).is_ok());
    }

    #[test]
    fn keys_compare_exactly_at_every_length() {
        let key = "abcdefghijklmnopqrstuvwxyz";
        for len in 0..key.len() {
            let a = &key.as_bytes()[..len];
            assert!(same_key(a, a), "{len}");
            for at in 0..len {
                // One byte off, wherever it is, is another key.
                let mut b = a.to_vec();
                b[at] = b'_';
                assert!(!same_key(a, &b), "{len} {at}");
            }
            assert!(!same_key(a, &key.as_bytes()[..len + 1]), "{len}");
        }
    }
}
