//! A one-pass reader of a record's JSON object: each member's key and raw
//! value, with the value's kind, borrowed from the record's text.
//!
//! The transform's hot path. serde_json read each record into raw values
//! and then read every value a second time to learn its type; this reader
//! walks the text once (strings are skipped with `memchr`), checks the
//! grammar it walks and reports the byte where it breaks. Escaped strings
//! are decoded by serde_json, which also validates their escapes.

use std::borrow::Cow;

/// Nesting deeper than this is refused (as serde_json does), so that a
/// hostile record cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

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

/// Where and why a record is not valid JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
}

/// The members of the JSON object `text`, in order, keys decoded.
pub fn object_members(text: &str) -> Result<Vec<(Cow<'_, str>, Raw<'_>)>, ScanError> {
    let mut reader = Reader::new(text);
    reader.whitespace();
    if reader.peek() != Some(b'{') {
        return Err(reader.error("expected a JSON object"));
    }
    let mut members = Vec::with_capacity(16);
    reader.object(0, Some(&mut members))?;
    reader.end()?;
    Ok(members)
}

/// The items of the JSON array `text`, in order.
pub fn array_items(text: &str) -> Result<Vec<Raw<'_>>, ScanError> {
    let mut reader = Reader::new(text);
    reader.whitespace();
    if reader.peek() != Some(b'[') {
        return Err(reader.error("expected a JSON array"));
    }
    let mut items = Vec::new();
    reader.array(0, Some(&mut items))?;
    reader.end()?;
    Ok(items)
}

/// Decodes a string value or key (quotes included) that holds escapes.
pub fn unescape(text: &str) -> Result<String, serde_json::Error> {
    serde_json::from_str::<String>(text)
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

type Members<'m, 'a> = Option<&'m mut Vec<(Cow<'a, str>, Raw<'a>)>>;

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn error(&self, what: &'static str) -> ScanError {
        ScanError { what, at: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn end(&mut self) -> Result<(), ScanError> {
        self.whitespace();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.error("trailing characters"))
        }
    }

    /// A value at the current position (after whitespace).
    fn value(&mut self, depth: usize) -> Result<Raw<'a>, ScanError> {
        self.whitespace();
        let start = self.pos;
        let kind = match self.peek() {
            Some(b'"') => Kind::Str {
                escaped: self.string()?,
            },
            Some(b'{') => {
                self.object(depth + 1, None)?;
                Kind::Object
            }
            Some(b'[') => {
                self.array(depth + 1, None)?;
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
    fn string(&mut self) -> Result<bool, ScanError> {
        self.pos += 1;
        let mut escaped = false;
        loop {
            let Some(offset) = memchr::memchr2(b'"', b'\\', &self.bytes[self.pos..]) else {
                self.pos = self.bytes.len();
                return Err(self.error("unterminated string"));
            };
            self.pos += offset;
            if self.bytes[self.pos] == b'"' {
                self.pos += 1;
                return Ok(escaped);
            }
            // A backslash and the character it escapes (for `\u`, the four
            // hex digits that follow are plain ASCII and are read on).
            escaped = true;
            if self.pos + 1 >= self.bytes.len() {
                self.pos = self.bytes.len();
                return Err(self.error("unterminated string"));
            }
            self.pos += 2;
        }
    }

    fn key(&mut self) -> Result<Cow<'a, str>, ScanError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string key"));
        }
        let start = self.pos;
        let escaped = self.string()?;
        let text = self.text.get(start..self.pos).unwrap_or_default();
        if escaped {
            unescape(text).map(Cow::Owned).map_err(|_| ScanError {
                what: "invalid escape in a key",
                at: start,
            })
        } else {
            Ok(Cow::Borrowed(&text[1..text.len() - 1]))
        }
    }

    /// An object starting at `{`; its members go to `out` when given.
    fn object(&mut self, depth: usize, mut out: Members<'_, 'a>) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.whitespace();
            let key = self.key()?;
            self.whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.pos += 1;
            let value = self.value(depth)?;
            if let Some(members) = out.as_deref_mut() {
                members.push((key, value));
            }
            self.whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.error("unexpected end of the record")),
                Some(_) => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// An array starting at `[`; its items go to `out` when given.
    fn array(&mut self, depth: usize, mut out: Option<&mut Vec<Raw<'a>>>) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let item = self.value(depth)?;
            if let Some(items) = out.as_deref_mut() {
                items.push(item);
            }
            self.whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.error("unexpected end of the record")),
                Some(_) => return Err(self.error("expected `,` or `]`")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(String, Kind, String)> {
        object_members(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.kind, v.text.to_owned()))
            .collect()
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
        ];
        for (text, message) in cases {
            let got = object_members(text).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(got, Err(message.to_owned()), "{text}");
        }
    }

    /// Mutated records (bytes deleted, inserted, replaced) are accepted by
    /// this reader exactly when serde_json accepts them. The alphabet
    /// leaves out what the reader checks only when a value is used
    /// (escapes, control characters in strings, out-of-range numbers).
    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let seed = r#"{"id":12,"name":"Ольга Chen","a":[1,{"b":null,"c":[true,false]}],"d":{"e":-0.5e2,"f":""},"g":[]}"#;
        let alphabet: Vec<char> = "{}[]\":, 0123456789.-+abefnlrstu".chars().collect();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as usize) % bound.max(1)
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..1 + next(3) {
                let at = next(chars.len() + 1);
                match next(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, alphabet[next(alphabet.len())]),
                    _ if at < chars.len() => chars[at] = alphabet[next(alphabet.len())],
                    _ => {}
                }
            }
            let text: String = chars.into_iter().collect();
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

    #[test]
    fn refuses_nesting_deeper_than_the_limit() {
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let err = object_members(&deep).map(|_| ()).map_err(|e| e.what);
        assert_eq!(err, Err("nested too deeply"));
        let fine = format!(r#"{{"a":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(object_members(&fine).is_ok());
    }
}
