//! Maps YAML paths such as `streams[1].page_size` to a line and column of the
//! pipeline text, so that errors found after deserialization (serde_norway
//! gives no spans) still point at the offending key or value.
//!
//! This is a best-effort reader of the YAML shapes pipeline files use: block
//! mappings and sequences, flow mappings and sequences (also across lines),
//! plain, quoted and block scalars, comments, anchors and tags. It only runs on
//! text serde_norway has already accepted, never fails, and anything it does
//! not follow makes the lookup fall back to the nearest located parent.

/// A 1-based line and column (columns count characters, as libyaml does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Pos {
    /// The start of the file.
    pub const START: Pos = Pos { line: 1, column: 1 };
}

/// One step of a path into the YAML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A sequence index (0-based).
    Index(usize),
}

/// Positions of the keys and values of one YAML text.
#[derive(Debug)]
pub struct Locator<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
    root: Option<Node>,
}

#[derive(Debug)]
struct Node {
    /// Byte offset of the first character of the node (after any anchor/tag).
    start: usize,
    /// Byte offset just past the node.
    end: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Scalar,
    Map(Vec<Entry>),
    Seq(Vec<Node>),
}

#[derive(Debug)]
struct Entry {
    key: String,
    key_start: usize,
    value: Option<Node>,
}

/// Where a path lookup ended.
enum Found<'n> {
    /// A node (the value at the path, or a sequence item).
    Node(&'n Node),
    /// A mapping entry whose value is empty (`key:` with nothing after it).
    EmptyValue { key_start: usize },
}

impl<'t> Locator<'t> {
    /// Reads the structure of `text`.
    pub fn new(text: &'t str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut parser = Parser {
            s: text.as_bytes(),
            text,
            pos: 0,
        };
        let root = parser.document();
        Locator {
            text,
            line_starts,
            root,
        }
    }

    /// The 1-based line and column of a byte offset into the text.
    pub fn pos_of_offset(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let column = self.text.as_bytes()[start..offset]
            .iter()
            .filter(|b| (**b & 0xC0) != 0x80)
            .count();
        Pos {
            line: line + 1,
            column: column + 1,
        }
    }

    /// True when the text holds no YAML node (only blanks and comments).
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// Position of the value at `path`, exactly; `None` when the path is not
    /// found. An empty value (`key:`) is located at its key.
    pub fn find_value(&self, path: &[Seg]) -> Option<Pos> {
        match self.walk(path) {
            Ok(Found::Node(node)) => Some(self.pos_of_offset(node.start)),
            Ok(Found::EmptyValue { key_start }) => Some(self.pos_of_offset(key_start)),
            Err(_) => None,
        }
    }

    /// Position of the key that ends `path` (for a sequence index: the item),
    /// exactly; `None` when the path is not found.
    pub fn find_key(&self, path: &[Seg]) -> Option<Pos> {
        self.key_offset(path).map(|o| self.pos_of_offset(o))
    }

    /// Position of the value at `path`, or else of the nearest located parent
    /// key (or item); the start of the file as a last resort.
    pub fn value(&self, path: &[Seg]) -> Pos {
        self.find_value(path)
            .unwrap_or_else(|| self.nearest_parent(path))
    }

    /// Position of the key that ends `path`, or else of the nearest located
    /// parent key (or item); the start of the file as a last resort.
    pub fn key(&self, path: &[Seg]) -> Pos {
        self.find_key(path)
            .unwrap_or_else(|| self.nearest_parent(path))
    }

    /// Byte range of the scalar at `path` as written in the text (quotes
    /// included), when the path leads to a scalar.
    pub fn scalar_span(&self, path: &[Seg]) -> Option<(usize, usize)> {
        match self.walk(path) {
            Ok(Found::Node(Node {
                start,
                end,
                kind: Kind::Scalar,
            })) => Some((*start, *end)),
            _ => None,
        }
    }

    /// Position of the second `key` of the mapping at `map_path` (serde
    /// places "duplicate field" errors on the mapping, not on the repeat).
    pub fn find_repeated_key(&self, map_path: &[Seg], key: &str) -> Option<Pos> {
        match self.walk(map_path) {
            Ok(Found::Node(Node {
                kind: Kind::Map(entries),
                ..
            })) => entries
                .iter()
                .filter(|e| e.key == key)
                .nth(1)
                .map(|e| self.pos_of_offset(e.key_start)),
            _ => None,
        }
    }

    fn nearest_parent(&self, path: &[Seg]) -> Pos {
        (1..path.len())
            .rev()
            .find_map(|len| self.find_key(&path[..len]))
            .unwrap_or(Pos::START)
    }

    fn key_offset(&self, path: &[Seg]) -> Option<usize> {
        let (last, parent) = path.split_last()?;
        let parent = match self.walk(parent).ok()? {
            Found::Node(node) => node,
            Found::EmptyValue { .. } => return None,
        };
        match (last, &parent.kind) {
            (Seg::Key(k), Kind::Map(entries)) => {
                entries.iter().find(|e| e.key == *k).map(|e| e.key_start)
            }
            (Seg::Index(i), Kind::Seq(items)) => items.get(*i).map(|n| n.start),
            _ => None,
        }
    }

    /// Follows `path` from the root; `Err(depth)` tells how many segments
    /// were found before the walk stopped.
    fn walk(&self, path: &[Seg]) -> Result<Found<'_>, usize> {
        let mut node = self.root.as_ref().ok_or(0usize)?;
        for (depth, seg) in path.iter().enumerate() {
            let next = match (seg, &node.kind) {
                (Seg::Key(k), Kind::Map(entries)) => {
                    let entry = entries.iter().find(|e| e.key == *k).ok_or(depth)?;
                    match &entry.value {
                        Some(v) => v,
                        None if depth + 1 == path.len() => {
                            return Ok(Found::EmptyValue {
                                key_start: entry.key_start,
                            });
                        }
                        None => return Err(depth + 1),
                    }
                }
                (Seg::Index(i), Kind::Seq(items)) => items.get(*i).ok_or(depth)?,
                _ => return Err(depth),
            };
            node = next;
        }
        Ok(Found::Node(node))
    }
}

/// The structure reader. Every loop advances `pos` or stops, so it always
/// terminates, whatever the input.
struct Parser<'t> {
    s: &'t [u8],
    text: &'t str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.s.get(i).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn line_start(&self, pos: usize) -> usize {
        self.s[..pos.min(self.s.len())]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
    }

    fn line_end(&self, pos: usize) -> usize {
        self.s[pos.min(self.s.len())..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(self.s.len(), |i| pos + i)
    }

    /// 0-based column of `pos`, in characters.
    fn col(&self, pos: usize) -> usize {
        let start = self.line_start(pos);
        self.s[start..pos.min(self.s.len())]
            .iter()
            .filter(|b| (**b & 0xC0) != 0x80)
            .count()
    }

    fn is_blank(b: Option<u8>) -> bool {
        matches!(b, None | Some(b' ' | b'\t' | b'\r' | b'\n'))
    }

    fn skip_inline_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Skips white space, line breaks and comments.
    fn skip_blank(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.pos += 1,
                Some(b'#') => self.pos = self.line_end(self.pos),
                _ => return,
            }
        }
    }

    /// True when the rest of the line is empty or a comment.
    fn rest_of_line_empty(&self) -> bool {
        let mut i = self.pos;
        while matches!(self.at(i), Some(b' ' | b'\t' | b'\r')) {
            i += 1;
        }
        matches!(self.at(i), None | Some(b'\n' | b'#'))
    }

    fn document(&mut self) -> Option<Node> {
        loop {
            self.skip_blank();
            if self.at_end() {
                return None;
            }
            let at_line_start = self.col(self.pos) == 0;
            if at_line_start && self.peek() == Some(b'%') {
                self.pos = self.line_end(self.pos);
            } else if at_line_start
                && self.s[self.pos..].starts_with(b"---")
                && Self::is_blank(self.at(self.pos + 3))
            {
                self.pos += 3;
            } else {
                break;
            }
        }
        Some(self.node(-1, false))
    }

    /// Skips anchors (`&a`) and tags (`!t`) in front of a node.
    fn skip_properties(&mut self) {
        while matches!(self.peek(), Some(b'&' | b'!')) {
            while !Self::is_blank(self.peek()) {
                self.pos += 1;
            }
            self.skip_inline_space();
        }
        if self.rest_of_line_empty() {
            self.skip_blank();
        }
    }

    /// Reads the node at `pos` (which is not blank). `parent_indent` is the
    /// column of the enclosing block collection (-1 at the root); `inline`
    /// is true for a value written after `key:` on the same line, which can
    /// only be a scalar or a flow collection.
    fn node(&mut self, parent_indent: isize, inline: bool) -> Node {
        let line = self.line_start(self.pos);
        self.skip_properties();
        // Properties alone on a line (`key: &anchor`) put the node below.
        let inline = inline && self.line_start(self.pos) == line;
        let start = self.pos;
        match self.peek() {
            None => Node {
                start,
                end: start,
                kind: Kind::Scalar,
            },
            Some(b'-') if !inline && Self::is_blank(self.at(self.pos + 1)) => self.block_seq(),
            Some(b'[' | b'{') => self.flow_node(),
            Some(b'|' | b'>') => self.block_scalar(parent_indent),
            Some(_) if !inline && self.mapping_key_colon(self.pos).is_some() => self.block_map(),
            Some(_) => self.multiline_scalar(parent_indent),
        }
    }

    /// If a block mapping key starts at `pos`, the offset of its `:`.
    fn mapping_key_colon(&self, pos: usize) -> Option<usize> {
        let end = self.line_end(pos);
        let mut i = pos;
        match self.at(i) {
            Some(q @ (b'"' | b'\'')) => {
                i = self.quoted_end(i, q);
                if i > end {
                    return None;
                }
                while matches!(self.at(i), Some(b' ' | b'\t')) {
                    i += 1;
                }
                (self.at(i) == Some(b':') && Self::is_blank(self.at(i + 1))).then_some(i)
            }
            Some(b'[' | b'{' | b'?' | b'#') | None => None,
            Some(_) => {
                while i < end {
                    match self.s[i] {
                        b':' if Self::is_blank(self.at(i + 1)) => return Some(i),
                        b'#' if i > pos && matches!(self.s[i - 1], b' ' | b'\t') => return None,
                        _ => i += 1,
                    }
                }
                None
            }
        }
    }

    /// Offset just past the closing quote of the quoted scalar at `pos`.
    fn quoted_end(&self, pos: usize, quote: u8) -> usize {
        let mut i = pos + 1;
        while i < self.s.len() {
            match self.s[i] {
                b'\\' if quote == b'"' => i += 2,
                b'\'' if quote == b'\'' && self.at(i + 1) == Some(b'\'') => i += 2,
                b if b == quote => return i + 1,
                _ => i += 1,
            }
        }
        self.s.len()
    }

    fn key_text(&self, start: usize, colon: usize) -> String {
        let raw = self.text.get(start..colon).unwrap_or("").trim_end();
        match raw.as_bytes().first() {
            Some(b'\'') => raw
                .trim_start_matches('\'')
                .trim_end_matches('\'')
                .replace("''", "'"),
            Some(b'"') => raw.trim_start_matches('"').trim_end_matches('"').to_owned(),
            _ => raw.to_owned(),
        }
    }

    fn block_map(&mut self) -> Node {
        let start = self.pos;
        let indent = self.col(start);
        let mut end = start;
        let mut entries = Vec::new();
        while let Some(colon) = self.mapping_key_colon(self.pos) {
            let key_start = self.pos;
            let key = self.key_text(key_start, colon);
            self.pos = colon + 1;
            end = self.pos;
            self.skip_inline_space();
            let value = if self.rest_of_line_empty() {
                self.skip_blank();
                let col = self.col(self.pos);
                let indentless_seq = col == indent
                    && self.peek() == Some(b'-')
                    && Self::is_blank(self.at(self.pos + 1));
                if !self.at_end() && (col > indent || indentless_seq) {
                    Some(self.node(indent as isize, false))
                } else {
                    None
                }
            } else {
                Some(self.node(indent as isize, true))
            };
            if let Some(v) = &value {
                end = v.end;
            }
            entries.push(Entry {
                key,
                key_start,
                value,
            });
            self.skip_blank();
            if self.at_end() || self.col(self.pos) != indent || self.pos == key_start {
                break;
            }
        }
        Node {
            start,
            end,
            kind: Kind::Map(entries),
        }
    }

    fn block_seq(&mut self) -> Node {
        let start = self.pos;
        let indent = self.col(start);
        let mut end = start;
        let mut items = Vec::new();
        while self.peek() == Some(b'-') && Self::is_blank(self.at(self.pos + 1)) {
            let dash = self.pos;
            self.pos += 1;
            self.skip_inline_space();
            let item = if self.rest_of_line_empty() {
                self.skip_blank();
                if !self.at_end() && self.col(self.pos) > indent {
                    self.node(indent as isize, false)
                } else {
                    Node {
                        start: dash,
                        end: dash + 1,
                        kind: Kind::Scalar,
                    }
                }
            } else {
                self.node(indent as isize, false)
            };
            end = item.end;
            items.push(item);
            self.skip_blank();
            if self.at_end() || self.col(self.pos) != indent || self.pos == dash {
                break;
            }
        }
        Node {
            start,
            end,
            kind: Kind::Seq(items),
        }
    }

    /// A `|` or `>` scalar: its header line and every following line that is
    /// blank or indented deeper than the parent collection.
    fn block_scalar(&mut self, parent_indent: isize) -> Node {
        let start = self.pos;
        let mut end = self.line_end(self.pos);
        let mut next = end + 1;
        while next < self.s.len() {
            let line_end = self.line_end(next);
            let line = &self.s[next..line_end];
            let blank = line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'));
            let indent = line.iter().take_while(|b| **b == b' ').count() as isize;
            if !blank && indent <= parent_indent {
                break;
            }
            if !blank {
                end = line_end;
            }
            next = line_end + 1;
        }
        self.pos = end;
        Node {
            start,
            end,
            kind: Kind::Scalar,
        }
    }

    /// A plain or quoted scalar in block context; a plain one continues on
    /// following lines indented deeper than the parent collection.
    fn multiline_scalar(&mut self, parent_indent: isize) -> Node {
        let start = self.pos;
        if let Some(q @ (b'"' | b'\'')) = self.peek() {
            self.pos = self.quoted_end(self.pos, q);
            return Node {
                start,
                end: self.pos,
                kind: Kind::Scalar,
            };
        }
        let mut end = self.plain_line_end(self.pos);
        loop {
            let next = self.line_end(end) + 1;
            if next >= self.s.len() {
                break;
            }
            let mut i = next;
            while matches!(self.at(i), Some(b' ')) {
                i += 1;
            }
            let indent = (i - next) as isize;
            if indent <= parent_indent || matches!(self.at(i), None | Some(b'#' | b'\n' | b'\r')) {
                break;
            }
            end = self.plain_line_end(i);
        }
        self.pos = end;
        Node {
            start,
            end,
            kind: Kind::Scalar,
        }
    }

    /// End of a plain scalar's text on the line of `pos` (before a comment
    /// and trailing white space).
    fn plain_line_end(&self, pos: usize) -> usize {
        let line_end = self.line_end(pos);
        let mut end = line_end;
        for i in pos..line_end {
            if self.s[i] == b'#' && i > pos && matches!(self.s[i - 1], b' ' | b'\t') {
                end = i;
                break;
            }
        }
        while end > pos && matches!(self.s[end - 1], b' ' | b'\t' | b'\r') {
            end -= 1;
        }
        end
    }

    fn flow_node(&mut self) -> Node {
        self.skip_blank();
        self.skip_properties();
        let start = self.pos;
        match self.peek() {
            Some(b'{') => self.flow_collection(true),
            Some(b'[') => self.flow_collection(false),
            Some(q @ (b'"' | b'\'')) => {
                self.pos = self.quoted_end(self.pos, q);
                Node {
                    start,
                    end: self.pos,
                    kind: Kind::Scalar,
                }
            }
            _ => {
                self.pos = self.flow_plain_end(self.pos);
                Node {
                    start,
                    end: self.pos,
                    kind: Kind::Scalar,
                }
            }
        }
    }

    /// End of a plain scalar inside a flow collection.
    fn flow_plain_end(&self, pos: usize) -> usize {
        let mut i = pos;
        while let Some(b) = self.at(i) {
            match b {
                b',' | b'[' | b']' | b'{' | b'}' | b'\n' => break,
                b':' if matches!(
                    self.at(i + 1),
                    None | Some(b' ' | b'\t' | b'\r' | b'\n' | b',' | b'[' | b']' | b'{' | b'}')
                ) =>
                {
                    break;
                }
                b'#' if i > pos && matches!(self.s[i - 1], b' ' | b'\t') => break,
                _ => i += 1,
            }
        }
        while i > pos && matches!(self.s[i - 1], b' ' | b'\t' | b'\r') {
            i -= 1;
        }
        i
    }

    fn flow_collection(&mut self, is_map: bool) -> Node {
        let start = self.pos;
        let close = if is_map { b'}' } else { b']' };
        self.pos += 1;
        let mut entries = Vec::new();
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            let before = self.pos;
            match self.peek() {
                None => break,
                Some(b) if b == close => {
                    self.pos += 1;
                    break;
                }
                Some(b',') => {
                    self.pos += 1;
                    continue;
                }
                Some(b']' | b'}') => {
                    // A mismatched closer: not valid YAML; stop here.
                    self.pos += 1;
                    break;
                }
                Some(_) if is_map => {
                    let key_start = self.pos;
                    let key_node = self.flow_node();
                    let key = self.key_text(key_node.start, key_node.end);
                    self.skip_blank();
                    let value = if self.peek() == Some(b':') {
                        self.pos += 1;
                        self.skip_blank();
                        if matches!(self.peek(), None | Some(b',' | b'}')) {
                            None
                        } else {
                            Some(self.flow_node())
                        }
                    } else {
                        None
                    };
                    entries.push(Entry {
                        key,
                        key_start,
                        value,
                    });
                }
                Some(_) => {
                    let item = self.flow_node();
                    items.push(item);
                    self.skip_blank();
                    if self.peek() == Some(b':') {
                        // `[a: b]`: a single-pair mapping; skip its value.
                        self.pos += 1;
                        self.skip_blank();
                        if !matches!(self.peek(), None | Some(b',' | b']')) {
                            self.flow_node();
                        }
                    }
                }
            }
            if self.pos == before {
                self.pos += 1;
            }
        }
        Node {
            start,
            end: self.pos,
            kind: if is_map {
                Kind::Map(entries)
            } else {
                Kind::Seq(items)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Seg::{Index, Key};
    use super::*;

    fn p(line: usize, column: usize) -> Option<Pos> {
        Some(Pos { line, column })
    }

    const PIPELINE: &str = "\
# A pipeline
version: 1
name: users
source:
  base_url: ${LUCCA_BASE_URL}
  api_key: ${LUCCA_API_KEY}          # or api_key_file
streams:
  - name: users
    endpoint: /api/v3/users
    paging: v3
    page_size: 1000
    params: { formerEmployees: \"true\", since: x }
    fields:
      - id
      - firstName
      - department[id,name]
    primary_key: id
  -   name: leaves
      endpoint: /api/v3/leaves
      fields: [id, 'date', \"leavePeriod.ownerId\"]
destination:
  duckdb: { path: out/lucca.duckdb }
";

    #[test]
    fn block_keys_and_values() {
        let l = Locator::new(PIPELINE);
        assert_eq!(l.find_key(&[Key("version")]), p(2, 1));
        assert_eq!(l.find_value(&[Key("version")]), p(2, 10));
        assert_eq!(l.find_value(&[Key("source"), Key("api_key")]), p(6, 12));
        assert_eq!(l.find_key(&[Key("source"), Key("api_key")]), p(6, 3));
        assert_eq!(l.find_key(&[Key("streams"), Index(0)]), p(8, 5));
        assert_eq!(
            l.find_value(&[Key("streams"), Index(0), Key("page_size")]),
            p(11, 16)
        );
        assert_eq!(
            l.find_value(&[Key("streams"), Index(0), Key("fields"), Index(2)]),
            p(16, 9)
        );
        assert_eq!(
            l.find_value(&[Key("streams"), Index(1), Key("endpoint")]),
            p(19, 17)
        );
        assert_eq!(l.find_key(&[Key("destination")]), p(21, 1));
    }

    #[test]
    fn flow_collections() {
        let l = Locator::new(PIPELINE);
        let params = [Key("streams"), Index(0), Key("params")];
        assert_eq!(l.find_value(&params), p(12, 13));
        let since = [Key("streams"), Index(0), Key("params"), Key("since")];
        assert_eq!(l.find_key(&since), p(12, 40));
        assert_eq!(l.find_value(&since), p(12, 47));
        let former = [
            Key("streams"),
            Index(0),
            Key("params"),
            Key("formerEmployees"),
        ];
        assert_eq!(l.find_value(&former), p(12, 32));
        assert_eq!(
            l.scalar_span(&former).map(|(s, e)| &PIPELINE[s..e]),
            Some("\"true\"")
        );
        let fields = [Key("streams"), Index(1), Key("fields")];
        assert_eq!(
            l.find_value(&[fields[0], fields[1], fields[2], Index(1)]),
            p(20, 20)
        );
        assert_eq!(
            l.find_value(&[fields[0], fields[1], fields[2], Index(2)]),
            p(20, 28)
        );
        let path = [Key("destination"), Key("duckdb"), Key("path")];
        assert_eq!(l.find_value(&path), p(22, 19));
        assert_eq!(
            l.scalar_span(&path).map(|(s, e)| &PIPELINE[s..e]),
            Some("out/lucca.duckdb")
        );
    }

    #[test]
    fn scalar_spans_stop_before_comments() {
        let l = Locator::new(PIPELINE);
        let span = l.scalar_span(&[Key("source"), Key("api_key")]);
        assert_eq!(span.map(|(s, e)| &PIPELINE[s..e]), Some("${LUCCA_API_KEY}"));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_parent() {
        let l = Locator::new(PIPELINE);
        assert_eq!(
            l.find_value(&[Key("streams"), Index(0), Key("write_mode")]),
            None
        );
        assert_eq!(
            l.value(&[Key("streams"), Index(0), Key("write_mode")]),
            Pos { line: 8, column: 5 }
        );
        assert_eq!(
            l.key(&[Key("streams"), Index(7), Key("name")]),
            Pos { line: 7, column: 1 }
        );
        assert_eq!(l.value(&[Key("nope"), Key("deeper")]), Pos::START);
    }

    #[test]
    fn indentless_sequences_empty_values_and_documents() {
        let text = "---\nstreams:\n- name: a\n  primary_key:\n- name: b\n  primary_key: [x, y]\nname: \"quoted: value\"\n";
        let l = Locator::new(text);
        assert_eq!(l.find_key(&[Key("streams"), Index(1)]), p(5, 3));
        assert_eq!(
            l.find_value(&[Key("streams"), Index(0), Key("primary_key")]),
            p(4, 3)
        );
        assert_eq!(
            l.find_value(&[Key("streams"), Index(1), Key("primary_key"), Index(1)]),
            p(6, 20)
        );
        assert_eq!(l.find_value(&[Key("name")]), p(7, 7));
    }

    #[test]
    fn block_scalars_multiline_values_and_anchors() {
        let text = "a: |\n  line one\n\n  line two\nb: plain\n  continued\nc: &anchor !!str value\n'd': >-\n  folded\ne: 1\n";
        let l = Locator::new(text);
        assert_eq!(l.find_value(&[Key("a")]), p(1, 4));
        assert_eq!(l.find_value(&[Key("b")]), p(5, 4));
        assert_eq!(
            l.scalar_span(&[Key("b")]).map(|(s, e)| &text[s..e]),
            Some("plain\n  continued")
        );
        assert_eq!(l.find_value(&[Key("c")]), p(7, 18));
        assert_eq!(l.find_key(&[Key("d")]), p(8, 1));
        assert_eq!(l.find_value(&[Key("e")]), p(10, 4));
    }

    #[test]
    fn multiline_flow_collections_and_unicode_columns() {
        let text = "name: équipe\nfields: [\n  id,   # the key\n  \"name\"\n]\nx: { é: 1, b: 2 }\n";
        let l = Locator::new(text);
        assert_eq!(l.find_value(&[Key("fields"), Index(0)]), p(3, 3));
        assert_eq!(l.find_value(&[Key("fields"), Index(1)]), p(4, 3));
        assert_eq!(l.find_key(&[Key("x"), Key("b")]), p(6, 12));
        assert_eq!(l.find_value(&[Key("x"), Key("b")]), p(6, 15));
        assert_eq!(l.pos_of_offset(text.len()), Pos { line: 7, column: 1 });
    }

    #[test]
    fn repeated_keys() {
        let l = Locator::new("a: 1\nb:\n  - x: 1\n    y: 2\n    x: 3\na: 2\n");
        assert_eq!(l.find_repeated_key(&[], "a"), p(6, 1));
        assert_eq!(l.find_repeated_key(&[Key("b"), Index(0)], "x"), p(5, 5));
        assert_eq!(l.find_repeated_key(&[], "b"), None);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "",
            "#only a comment\n",
            "- \n-",
            "a: [1, 2",
            "a: {b: ]",
            "? complex\n: key\n",
            "a:\n  - - x\n    - y\n",
            "a: 'unterminated",
            "{a: 1}: b",
            "a: \"x\\",
            "---",
            "%YAML 1.2\n---\na: 1",
            "a:\tb\n\t- c",
        ] {
            let l = Locator::new(text);
            let _ = l.value(&[Key("a"), Index(0), Key("b")]);
            let _ = l.key(&[Key("a")]);
        }
        let l = Locator::new("%YAML 1.2\n---\na: 1");
        assert_eq!(l.find_value(&[Key("a")]), p(3, 4));
        let l = Locator::new("a:\n  - - x\n    - y\n");
        assert_eq!(l.find_value(&[Key("a"), Index(0), Index(1)]), p(3, 7));
    }
}
