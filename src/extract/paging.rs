//! Lucca's paging styles and list envelopes: which URL asks for the next
//! page, and where the records and the total count are in a response body.

use std::collections::HashSet;

use url::Url;

use crate::json::{self, Kind, Raw, Reader, RecordTape, ScanError};

use crate::pipeline::{PageBy, PagingStyle};

/// A list response, parsed only as far as the envelope: the records stay
/// in the body, located by a tape, for the transform to read once.
#[derive(Debug)]
pub struct ParsedPage {
    /// Where each record and each of its members sit in the response body.
    pub records: RecordTape,
    /// The total the API reported (`data.count`, `count` or `totalCount`).
    pub count: Option<u64>,
    /// The next page as the API names it: `links.next.href` (cursor
    /// paging) or a root `next` (v4: a URL or an opaque page cursor).
    /// `None` when absent or null.
    pub next: Option<String>,
}

/// Why a body could not be read as a list envelope.
#[derive(Debug)]
pub enum EnvelopeError {
    /// Not JSON, or JSON cut short: worth another attempt.
    InvalidJson(String),
    /// Valid JSON of the wrong shape: retrying will not help.
    Unexpected(String),
}

/// What each paging style expects to find, for error messages.
fn expected_envelope(style: PagingStyle) -> &'static str {
    match style {
        PagingStyle::V3 => {
            r#"a list envelope {"data": {"items": [...], "count": N}} or {"items": [...]}"#
        }
        PagingStyle::V4 => r#"a list envelope {"items": [...], "count": N}"#,
        PagingStyle::Cursor => {
            r#"a list envelope {"items": [...], "totalCount": N, "links": {...}}"#
        }
    }
}

/// The envelope's members as found, before their shape is judged.
#[derive(Default)]
struct Found<'a> {
    /// Which `items` array is on the tape.
    items: Option<ItemsAt>,
    data_count: Option<Raw<'a>>,
    count: Option<Raw<'a>>,
    total_count: Option<Raw<'a>>,
    href: Option<Raw<'a>>,
    /// A root `next` (v4).
    next: Option<Raw<'a>>,
    /// The first member of the wrong type, e.g. "`data` is a string".
    wrong: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum ItemsAt {
    Data,
    Root,
}

impl Found<'_> {
    fn wrong_type(&mut self, path: &str, raw: Raw<'_>) {
        if raw.kind != Kind::Null && self.wrong.is_none() {
            self.wrong = Some(format!("`{path}` is {}", kind_name(raw.kind)));
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Null => "null",
        Kind::Bool(_) => "a boolean",
        Kind::Number => "a number",
        Kind::Str { .. } => "a string",
        Kind::Object => "an object",
        Kind::Array => "an array",
    }
}

/// A count member as a number, or `None` (noting a wrong type).
fn count_of(found: &mut Found<'_>, path: &str, raw: Option<Raw<'_>>) -> Option<u64> {
    let raw = raw?;
    if raw.kind != Kind::Number {
        found.wrong_type(path, raw);
        return None;
    }
    let count = raw.text.parse::<u64>().ok();
    if count.is_none() && found.wrong.is_none() {
        found.wrong = Some(format!("`{path}` is not a count: {}", raw.text));
    }
    count
}

/// Reads an `items` array onto the tape, or notes what else it is.
fn read_items<'a>(
    reader: &mut Reader<'a>,
    found: &mut Found<'a>,
    tape: &mut RecordTape,
    at: ItemsAt,
) -> Result<(), ScanError> {
    if reader.next_byte() != Some(b'[') {
        let raw = reader.value()?;
        let path = if at == ItemsAt::Data {
            "data.items"
        } else {
            "items"
        };
        found.wrong_type(path, raw);
        return Ok(());
    }
    // `data.items` wins over a root `items`, whichever comes first.
    if found.items == Some(ItemsAt::Data) {
        reader.value()?;
        return Ok(());
    }
    reader.records(tape)?;
    found.items = Some(at);
    Ok(())
}

/// Reads an object member by member, or notes what else it is.
fn read_object<'a>(
    reader: &mut Reader<'a>,
    found: &mut Found<'a>,
    path: &str,
    mut member: impl FnMut(&mut Reader<'a>, &mut Found<'a>, &str) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    if reader.next_byte() != Some(b'{') {
        let raw = reader.value()?;
        found.wrong_type(path, raw);
        return Ok(());
    }
    reader.object(|reader, key| member(reader, found, &key))
}

/// Reads the envelope of a list response onto `records` (a recycled tape,
/// or an empty one). Accepts `data.items`/`data.count`, a root
/// `items`/`count`/`totalCount` and `links.next.href`, and ignores any
/// other block such as `header`. The whole body is checked as JSON: a body
/// cut short is [`EnvelopeError::InvalidJson`].
pub fn parse_envelope(
    body: &str,
    style: PagingStyle,
    mut records: RecordTape,
) -> Result<ParsedPage, EnvelopeError> {
    records.clear();
    let mut reader = Reader::new(body);
    let mut found = Found::default();
    let walked = if reader.next_byte() == Some(b'{') {
        read_object(
            &mut reader,
            &mut found,
            "",
            |reader, found, key| match key {
                "data" => read_object(reader, found, "data", |reader, found, key| match key {
                    "items" => read_items(reader, found, &mut records, ItemsAt::Data),
                    "count" => {
                        found.data_count = Some(reader.value()?);
                        Ok(())
                    }
                    _ => reader.value().map(drop),
                }),
                "items" => read_items(reader, found, &mut records, ItemsAt::Root),
                "count" => {
                    found.count = Some(reader.value()?);
                    Ok(())
                }
                "totalCount" => {
                    found.total_count = Some(reader.value()?);
                    Ok(())
                }
                "next" => {
                    found.next = Some(reader.value()?);
                    Ok(())
                }
                "links" => read_object(reader, found, "links", |reader, found, key| match key {
                    "next" => read_object(reader, found, "links.next", |reader, found, key| {
                        match key {
                            "href" => found.href = Some(reader.value()?),
                            _ => drop(reader.value()?),
                        }
                        Ok(())
                    }),
                    _ => reader.value().map(drop),
                }),
                _ => reader.value().map(drop),
            },
        )
    } else {
        reader.value().map(|raw| {
            found.wrong = Some(format!("the body is {}", kind_name(raw.kind)));
        })
    };
    walked.and_then(|()| reader.end()).map_err(|e| {
        if e.is_too_deep() {
            // The whole body was read and nests too deeply: asking again
            // gets the same body, unlike one cut short.
            EnvelopeError::Unexpected(format!(
                "the body nests arrays and objects deeper than {} levels ({e}); not retried, as every attempt would read the same",
                json::MAX_DEPTH
            ))
        } else {
            EnvelopeError::InvalidJson(e.to_string())
        }
    })?;
    let expected = expected_envelope(style);
    let data_count = found.data_count.take();
    let data_count = count_of(&mut found, "data.count", data_count);
    let root_count = found.count.take();
    let root_count = count_of(&mut found, "count", root_count);
    let total_count = found.total_count.take();
    let total_count = count_of(&mut found, "totalCount", total_count);
    let href = found.href.take();
    let href = text_of(&mut found, "links.next.href", href, false)?;
    let next = found.next.take();
    // Only v4 documents a root `next`: elsewhere it is some other member.
    let next = if style == PagingStyle::V4 {
        text_of(&mut found, "next", next, true)?
    } else {
        None
    };
    if let Some(wrong) = found.wrong {
        return Err(EnvelopeError::Unexpected(format!(
            "expected {expected} ({wrong})"
        )));
    }
    let count = match found.items {
        Some(ItemsAt::Data) => data_count,
        Some(ItemsAt::Root) => root_count.or(total_count),
        None => {
            return Err(EnvelopeError::Unexpected(format!(
                "expected {expected}, found no `items` array"
            )));
        }
    };
    Ok(ParsedPage {
        records,
        count,
        next: href.or(next),
    })
}

/// A link or cursor member as text: a string (unescaped), or a number
/// when `number_ok` (a page number); `None` when absent or null (noting
/// any other type).
fn text_of(
    found: &mut Found<'_>,
    path: &str,
    raw: Option<Raw<'_>>,
    number_ok: bool,
) -> Result<Option<String>, EnvelopeError> {
    match raw {
        Some(Raw {
            kind: Kind::Str { escaped },
            text,
        }) => Ok(Some(if escaped {
            json::unescape(text).map_err(|e| EnvelopeError::InvalidJson(e.to_string()))?
        } else {
            text.get(1..text.len().saturating_sub(1))
                .unwrap_or_default()
                .to_owned()
        })),
        Some(Raw {
            kind: Kind::Number,
            text,
        }) if number_ok => Ok(Some(text.to_owned())),
        Some(raw) => {
            found.wrong_type(path, raw);
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The first and last `id` of a page's records, for keyset paging: each
/// record needs an integer `id`, and the ids must rise through the page
/// (an endpoint that ignores `orderBy=id,asc` would make keyset paging
/// skip and repeat records). `None` for an empty page. Errors are
/// messages for the caller to wrap.
pub fn page_ids(records: &RecordTape, body: &str) -> Result<Option<(i64, i64)>, String> {
    let mut ids: Option<(i64, i64)> = None;
    for index in 0..records.len() {
        let id = records
            .member(body, index, "id")
            .filter(|raw| raw.kind == Kind::Number)
            .and_then(|raw| raw.text.parse::<i64>().ok())
            .ok_or_else(|| NO_INTEGER_ID.to_owned())?;
        ids = match ids {
            None => Some((id, id)),
            Some((_, last)) if id <= last => return Err(unsorted(id, last)),
            Some((first, _)) => Some((first, id)),
        };
    }
    Ok(ids)
}

const NO_INTEGER_ID: &str =
    "keyset paging (page_by: id) needs an integer `id` on every record; set `page_by: offset`";

fn unsorted(id: i64, before: i64) -> String {
    format!(
        "records are not sorted by id (id {id} after id {before}): the endpoint ignores orderBy=id,asc; set `page_by: offset`"
    )
}

/// What one page says about the rest of the collection.
#[derive(Debug, Default, Clone, Copy)]
pub struct PageFacts<'a> {
    /// Records on the page.
    pub items: usize,
    /// The count the API gave with the page.
    pub count: Option<u64>,
    /// The page's first and last `id` ([`page_ids`], keyset paging).
    pub ids: Option<(i64, i64)>,
    /// The page's link or cursor to the next one ([`ParsedPage::next`]).
    pub next: Option<&'a str>,
}

/// Where the stream is in its collection.
#[derive(Debug, Clone, PartialEq)]
enum Position {
    /// v3 offset paging: the next offset.
    Offset(u64),
    /// v3 keyset paging: the last id read, if any.
    AfterId(Option<i64>),
    /// v4: the next 1-based page number.
    PageNumber(u64),
    /// v4: the opaque page cursor the last page named as `next`.
    PageCursor(String),
    /// Cursor paging: the next URL, or the first page.
    Cursor(Option<Url>),
}

/// The sequence of page URLs of one stream.
#[derive(Debug)]
pub struct Pager {
    style: PagingStyle,
    base: Url,
    page_size: u32,
    position: Position,
    read: u64,
    total: Option<u64>,
    /// Every URL fetched by following a `next` link or cursor, the first
    /// page's included: a link back to one of them is a loop.
    followed: HashSet<String>,
}

/// What the pager decided after a page.
#[derive(Debug, PartialEq)]
pub enum NextPage {
    /// Ask for this URL next.
    Fetch(Url),
    /// The collection is fully read.
    Done,
}

impl Pager {
    /// A pager starting at the first page of `base` (endpoint URL with the
    /// stream's own query parameters and projection already set).
    pub fn new(style: PagingStyle, page_by: PageBy, base: Url, page_size: u32) -> Self {
        let position = match (style, page_by) {
            (PagingStyle::V3, PageBy::Id) => Position::AfterId(None),
            (PagingStyle::V3, PageBy::Offset) => Position::Offset(0),
            (PagingStyle::V4, _) => Position::PageNumber(1),
            (PagingStyle::Cursor, _) => Position::Cursor(None),
        };
        Pager {
            style,
            base,
            page_size,
            position,
            read: 0,
            total: None,
            followed: HashSet::new(),
        }
    }

    /// The total count reported by the first page, when the API gave one.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The page size the next request asks for.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The URL of the page to fetch now.
    pub fn current_url(&self) -> Url {
        let mut url = self.base.clone();
        let size = self.page_size;
        match &self.position {
            Position::Offset(offset) => {
                url.query_pairs_mut()
                    .append_pair("paging", &format!("{offset},{size}"));
            }
            Position::AfterId(after) => {
                let mut q = url.query_pairs_mut();
                q.append_pair("orderBy", "id,asc");
                if let Some(id) = after {
                    q.append_pair("id", &format!("greaterthan,{id}"));
                }
                q.append_pair("paging", &format!("0,{size}"));
            }
            Position::PageNumber(page) => {
                url.query_pairs_mut()
                    .append_pair("limit", &size.to_string())
                    .append_pair("page", &page.to_string());
            }
            Position::PageCursor(cursor) => {
                url.query_pairs_mut()
                    .append_pair("limit", &size.to_string())
                    .append_pair("page", cursor);
            }
            Position::Cursor(Some(next)) => return next.clone(),
            Position::Cursor(None) => {
                url.query_pairs_mut()
                    .append_pair("limit", &size.to_string());
            }
        }
        url
    }

    /// Moves past a page. Errors are messages for the caller to wrap.
    ///
    /// An empty page ends the collection. Otherwise a page ends it only
    /// when it is short of the size asked AND the API's count says nothing
    /// is left: a short page without a count may be the endpoint's own
    /// maximum, and a full page that the count calls the last is checked
    /// with one more request, so that a count lower than the truth (records
    /// added during the run, a tenant's rounding) cannot cut the stream.
    /// Either costs at most one request more than the pages themselves.
    pub fn advance(&mut self, page: PageFacts<'_>) -> Result<NextPage, String> {
        let items = page.items as u64;
        let first_page = self.read == 0;
        self.read += items;
        if first_page {
            self.total = page.count;
        }
        if items == 0 {
            return Ok(NextPage::Done);
        }
        // A tenant may end a list with `"next": ""`.
        let next = page.next.filter(|next| !next.trim().is_empty());
        // Reading on past the count is how a count short of the truth is
        // caught, but not without end: an endpoint that serves page 1
        // again past the end would be read in a cycle.
        if next.is_none()
            && let Some(count) = self.total
            && self.read > count.saturating_mul(2) + u64::from(self.page_size)
        {
            return Err(format!(
                "the API counts {count} records and {} were read, and the pages go on; stopping rather than read on without end",
                self.read
            ));
        }
        let short = items < u64::from(self.page_size);
        let last = |count_says_all_read: Option<bool>| short && count_says_all_read == Some(true);
        match &mut self.position {
            Position::Offset(offset) => {
                *offset += items;
                if last(page.count.map(|c| *offset >= c)) {
                    return Ok(NextPage::Done);
                }
            }
            Position::AfterId(after) => {
                let Some((first, last_id)) = page.ids else {
                    return Err(NO_INTEGER_ID.into());
                };
                if let Some(before) = *after
                    && first <= before
                {
                    return Err(unsorted(first, before));
                }
                *after = Some(last_id);
                // Each keyset request counts what is left after the filter.
                if last(page.count.map(|c| c <= items)) {
                    return Ok(NextPage::Done);
                }
            }
            Position::PageNumber(number) => {
                if let Some(next) = next {
                    return self.follow(next);
                }
                if last(page.count.map(|c| self.read >= c)) {
                    return Ok(NextPage::Done);
                }
                if short && self.read.is_multiple_of(items) {
                    // The endpoint's own maximum: page on with its size.
                    self.page_size = u32::try_from(items).unwrap_or(self.page_size);
                    *number = self.read / items + 1;
                } else {
                    *number += 1;
                }
            }
            Position::PageCursor(_) | Position::Cursor(_) => {
                if let Some(next) = next {
                    return self.follow(next);
                }
                // Without a link there is no telling where the rest is:
                // a count not reached fails the stream, never ends it.
                return match page.count.or(self.total) {
                    Some(count) if self.read < count => Err(format!(
                        "the API counts {count} records and {} were read, but the page names no next page; the stream would end short",
                        self.read
                    )),
                    _ => Ok(NextPage::Done),
                };
            }
        }
        Ok(NextPage::Fetch(self.current_url()))
    }

    /// Goes to the page a `next` member names: a URL on the same host (a
    /// link), or else an opaque v4 page cursor. A link keeps every query
    /// parameter of the page just read that it does not set itself: a
    /// tenant's link may name only `limit` and `page`, and without
    /// `fields.root` the next page would name no next page, without
    /// `fields`, `sort` and the stream's filters it would hold other records.
    ///
    /// A link that never ends would be followed forever: a next page whose
    /// URL was already fetched in this pass (the page just read included)
    /// fails the stream, and so do links still followed once twice the
    /// API's count and a page more were read (a server that names a new
    /// URL for the same records each time).
    fn follow(&mut self, next: &str) -> Result<NextPage, String> {
        let read = self.current_url();
        self.followed.insert(page_key(&read));
        if let Some(count) = self.total
            && self.read > count.saturating_mul(2) + u64::from(self.page_size)
        {
            return Err(format!(
                "the API counts {count} records, {} were read and the page still names a next page (`{next}`); stopping rather than read on without end",
                self.read
            ));
        }
        let url = self.next_url(&read, next)?;
        if !self.followed.insert(page_key(&url)) {
            return Err(format!(
                "the page names as its next page one already read in this stream ({}); stopping rather than loop",
                super::display_url(&url)
            ));
        }
        Ok(NextPage::Fetch(url))
    }

    /// Moves to the page `next` names, from the page `read`; returns its URL.
    fn next_url(&mut self, read: &Url, next: &str) -> Result<Url, String> {
        let scheme = next.get(..8).unwrap_or(next).to_ascii_lowercase();
        let is_link = scheme.starts_with("http://")
            || scheme.starts_with("https://")
            || next.starts_with('/')
            || next.starts_with('?');
        if !is_link && self.style == PagingStyle::V4 {
            self.position = Position::PageCursor(next.to_owned());
            return Ok(self.current_url());
        }
        let mut url = read
            .join(next)
            .map_err(|e| format!("next page link `{next}` is not a URL: {e}"))?;
        if url.origin() != self.base.origin() {
            self.same_tenant(&mut url)?;
        }
        let set: HashSet<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let missing: Vec<_> = read
            .query_pairs()
            .filter(|(k, _)| !set.contains(k.as_ref()))
            .collect();
        if !missing.is_empty() {
            url.query_pairs_mut().extend_pairs(missing);
        }
        self.position = Position::Cursor(Some(url));
        Ok(self.current_url())
    }
}

impl Pager {
    /// Accepts a link of another origin than the base URL's only when it
    /// differs by the scheme alone (`http` for `https` or the reverse, on
    /// the same host, each on its default port or both on the same one):
    /// a tenant behind a proxy may write its links with the scheme it sees.
    /// The link is then followed on the base URL's scheme and port, so an
    /// `https` base is never downgraded to plain `http` (and an `http`
    /// base, allowed only on loopback hosts, stays on the port it serves).
    /// Any other host or port is refused: the API key goes nowhere else.
    fn same_tenant(&self, url: &mut Url) -> Result<(), String> {
        let base = &self.base;
        let web = |scheme: &str| scheme == "http" || scheme == "https";
        if url.host_str() != base.host_str() {
            return Err(format!(
                "next page link points to another host ({}); refusing to send the API key there",
                url.host_str().unwrap_or("?")
            ));
        }
        if !web(url.scheme()) {
            return Err(format!(
                "next page link uses another scheme ({}: on {}); refusing to send the API key there",
                url.scheme(),
                base.scheme()
            ));
        }
        // `port()` is `None` on the scheme's default port.
        if url.port() != base.port() {
            let port = |u: &Url| u.port_or_known_default().unwrap_or_default();
            return Err(if url.scheme() == base.scheme() {
                format!(
                    "next page link points to another port ({} for {}); refusing to send the API key there",
                    port(url),
                    port(base)
                )
            } else {
                format!(
                    "next page link points to another scheme and port ({}:{} for {}:{}); refusing to send the API key there",
                    url.scheme(),
                    port(url),
                    base.scheme(),
                    port(base)
                )
            });
        }
        let from = url.scheme().to_owned();
        if url.set_scheme(base.scheme()).is_err() || url.set_port(base.port()).is_err() {
            return Err(format!(
                "next page link uses another scheme ({from} for {}) and cannot be moved to ours",
                base.scheme()
            ));
        }
        if from == "http" {
            tracing::debug!(link = %super::display_url(url), "next page link named http: followed on https, the base URL's scheme");
        }
        Ok(())
    }
}

/// What identifies the page a URL asks for: the URL with its query
/// parameters sorted (a link may name ours in another order).
fn page_key(url: &Url) -> String {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    let mut key = url.clone();
    key.set_fragment(None);
    key.set_query(None);
    if !pairs.is_empty() {
        key.query_pairs_mut().extend_pairs(pairs);
    }
    key.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://acme.ilucca.net/api/v3/users?fields=id%2Ccollection.count")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse(body: &str) -> Result<ParsedPage, EnvelopeError> {
        parse_envelope(body, PagingStyle::V3, RecordTape::default())
    }

    #[test]
    fn reads_every_v3_envelope_variant() {
        let data = r#"{"header":{"generated":"x"},"data":{"items":[{"id":1},{"id":2}],"count":2}}"#;
        let page = parse(data).unwrap_or_else(|_| panic!("data"));
        assert_eq!(page.count, Some(2));
        assert_eq!(page.records.text(data, 1), r#"{"id":2}"#);
        let root = r#"{"items":[{"id":1}]}"#;
        let page = parse(root).unwrap_or_else(|_| panic!("root"));
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.count, None);
        // `data.items` wins over a root `items`, in either order; nulls
        // are as good as absent.
        for body in [
            r#"{"items":[{"id":9}],"data":{"items":[{"id":1},{"id":2}],"count":2},"count":null}"#,
            r#"{"data":{"count":2,"items":[{"id":1},{"id":2}]},"items":[{"id":9}]}"#,
        ] {
            let page = parse(body).unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert_eq!(page.records.len(), 2, "{body}");
            assert_eq!(page.records.text(body, 0), r#"{"id":1}"#, "{body}");
            assert_eq!(page.count, Some(2), "{body}");
        }
        let cursor =
            r#"{"items":[],"totalCount":0,"links":{"next":{"href":"https:\/\/a.example\/x?c=1"}}}"#;
        let page = parse(cursor).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(page.count, Some(0));
        assert_eq!(page.next.as_deref(), Some("https://a.example/x?c=1"));
        // v4 names its next page at the root: a cursor, a link or null.
        for (body, next) in [
            (r#"{"items":[],"count":0,"next":"b2Zm"}"#, Some("b2Zm")),
            (r#"{"items":[],"next":"\/x?page=2"}"#, Some("/x?page=2")),
            (r#"{"items":[],"next":3}"#, Some("3")),
            (r#"{"items":[],"prev":null,"next":null}"#, None),
        ] {
            let page = parse_envelope(body, PagingStyle::V4, RecordTape::default())
                .unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert_eq!(page.next.as_deref(), next, "{body}");
        }
        let v3 = parse(r#"{"data":{"items":[],"count":0},"next":"x"}"#)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(v3.next, None, "a root `next` is v4's only");
    }

    #[test]
    fn tells_broken_json_from_wrong_shape() {
        assert!(matches!(
            parse(r#"{"data":{"items":[{"id":1},"#),
            Err(EnvelopeError::InvalidJson(_))
        ));
        for cut in [
            r#"{"data":{"items":[{"id":1}],"count":1}"#,
            r#"<html>502 Bad Gateway</html>"#,
            r#"{"items":[{"id":"a\qb"}]}"#,
            "",
        ] {
            assert!(
                matches!(parse(cut), Err(EnvelopeError::InvalidJson(_))),
                "{cut}"
            );
        }
        for (body, wrong) in [
            (r#"[{"id":1}]"#, "the body is an array"),
            (r#"{"data":"x"}"#, "`data` is a string"),
            (
                r#"{"data":{"items":{"id":1}}}"#,
                "`data.items` is an object",
            ),
            (r#"{"items":[],"count":"12"}"#, "`count` is a string"),
            (
                r#"{"items":[],"totalCount":-1}"#,
                "`totalCount` is not a count: -1",
            ),
            (
                r#"{"items":[],"links":{"next":{"href":3}}}"#,
                "`links.next.href` is a number",
            ),
        ] {
            match parse(body) {
                Err(EnvelopeError::Unexpected(m)) => {
                    assert!(m.ends_with(&format!("({wrong})")), "{body}: {m}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // Nesting past the limit is no cut body: the same on every attempt.
        let deep = format!(
            r#"{{"items":[{{"id":1,"x":{}1{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        match parse(&deep) {
            Err(EnvelopeError::Unexpected(m)) => assert!(
                m.starts_with("the body nests arrays and objects deeper than 128 levels (nested too deeply at byte"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match parse(r#"{"data":{"id":1}}"#) {
            Err(EnvelopeError::Unexpected(m)) => assert_eq!(
                m,
                r#"expected a list envelope {"data": {"items": [...], "count": N}} or {"items": [...]}, found no `items` array"#
            ),
            other => panic!("{other:?}"),
        }
    }

    fn facts(items: usize, count: Option<u64>) -> PageFacts<'static> {
        PageFacts {
            items,
            count,
            ..PageFacts::default()
        }
    }

    fn fetched(next: Result<NextPage, String>) -> String {
        match next {
            Ok(NextPage::Fetch(url)) => url.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn offset_paging_stops_at_count() {
        let mut p = Pager::new(PagingStyle::V3, PageBy::Offset, base(), 2);
        assert!(p.current_url().as_str().ends_with("paging=0%2C2"));
        assert!(fetched(p.advance(facts(2, Some(3)))).ends_with("paging=2%2C2"));
        assert_eq!(p.advance(facts(1, Some(3))), Ok(NextPage::Done));
        // Without a count, a short page may be the endpoint's maximum: one
        // more page is asked for, and an empty one ends the stream.
        let mut p = Pager::new(PagingStyle::V3, PageBy::Offset, base(), 2);
        assert!(fetched(p.advance(facts(1, None))).ends_with("paging=1%2C2"));
        assert_eq!(p.advance(facts(0, None)), Ok(NextPage::Done));
        // A full page the count calls the last is checked: the count may
        // be lower than the truth.
        let mut p = Pager::new(PagingStyle::V3, PageBy::Offset, base(), 2);
        assert!(fetched(p.advance(facts(2, Some(2)))).ends_with("paging=2%2C2"));
        assert!(fetched(p.advance(facts(2, Some(2)))).ends_with("paging=4%2C2"));
        assert_eq!(p.advance(facts(0, Some(2))), Ok(NextPage::Done));
    }

    #[test]
    fn a_page_shorter_than_asked_is_not_the_last_while_the_count_says_more() {
        // An endpoint serving at most 2 records when 5 are asked.
        let mut p = Pager::new(PagingStyle::V3, PageBy::Offset, base(), 5);
        assert!(fetched(p.advance(facts(2, Some(5)))).ends_with("paging=2%2C5"));
        assert!(fetched(p.advance(facts(2, Some(5)))).ends_with("paging=4%2C5"));
        assert_eq!(p.advance(facts(1, Some(5))), Ok(NextPage::Done));
        // Fewer records than counted (deleted meanwhile): an empty page ends it.
        let mut p = Pager::new(PagingStyle::V3, PageBy::Offset, base(), 5);
        let _ = p.advance(facts(3, Some(9)));
        assert_eq!(p.advance(facts(0, Some(9))), Ok(NextPage::Done));

        let mut p = Pager::new(PagingStyle::V3, PageBy::Id, base(), 5);
        let page = PageFacts {
            ids: Some((1, 2)),
            ..facts(2, Some(4))
        };
        assert!(fetched(p.advance(page)).contains("id=greaterthan%2C2"));

        // v4 at most 50 when 100 are asked: on with pages of 50.
        let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, base(), 100);
        assert!(fetched(p.advance(facts(50, Some(120)))).ends_with("limit=50&page=2"));
        assert!(fetched(p.advance(facts(50, Some(120)))).ends_with("limit=50&page=3"));
        assert_eq!(p.advance(facts(20, Some(120))), Ok(NextPage::Done));
    }

    #[test]
    fn keyset_paging_filters_on_last_id() {
        let mut p = Pager::new(PagingStyle::V3, PageBy::Id, base(), 2);
        let page = PageFacts {
            ids: Some((3, 7)),
            ..facts(2, Some(5))
        };
        assert!(
            fetched(p.advance(page)).ends_with("orderBy=id%2Casc&id=greaterthan%2C7&paging=0%2C2")
        );
        // Two left after id 7 and two read, a full page: one more request,
        // in case the count is short of the truth.
        let page = PageFacts {
            ids: Some((8, 9)),
            ..facts(2, Some(2))
        };
        assert!(fetched(p.advance(page)).ends_with("id=greaterthan%2C9&paging=0%2C2"));
        // One left and one read, a short page: done without an empty request.
        let page = PageFacts {
            ids: Some((10, 10)),
            ..facts(1, Some(1))
        };
        assert_eq!(p.advance(page), Ok(NextPage::Done));
        assert_eq!(p.total(), Some(5));
    }

    #[test]
    fn pages_going_on_far_past_the_count_fail_the_stream() {
        // Page 1 served again and again past the end: full pages forever.
        let mut p = Pager::new(PagingStyle::V3, PageBy::Offset, base(), 2);
        for _ in 0..3 {
            assert!(p.advance(facts(2, Some(2))).is_ok());
        }
        assert_eq!(
            p.advance(facts(2, Some(2))),
            Err("the API counts 2 records and 8 were read, and the pages go on; stopping rather than read on without end".into())
        );
    }

    #[test]
    fn an_empty_next_is_no_next() {
        // A tenant that ends its lists with `"next": ""`.
        let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, base(), 2);
        let page = PageFacts {
            next: Some(""),
            ..facts(2, Some(3))
        };
        assert!(fetched(p.advance(page)).ends_with("limit=2&page=2"));
        let page = PageFacts {
            next: Some(""),
            ..facts(1, Some(3))
        };
        assert_eq!(p.advance(page), Ok(NextPage::Done));
    }

    #[test]
    fn keyset_refuses_unsorted_ids() {
        let mut p = Pager::new(PagingStyle::V3, PageBy::Id, base(), 2);
        let page = |first, last| PageFacts {
            ids: Some((first, last)),
            ..facts(2, Some(9))
        };
        let _ = p.advance(page(5, 7));
        assert_eq!(
            p.advance(page(7, 9)),
            Err("records are not sorted by id (id 7 after id 7): the endpoint ignores orderBy=id,asc; set `page_by: offset`".into())
        );
        assert!(p.advance(facts(2, Some(9))).is_err(), "no ids");
    }

    #[test]
    fn page_ids_must_rise_through_the_page() {
        let ids = |body: &str| {
            let page = parse(body).unwrap_or_else(|e| panic!("{e:?}"));
            page_ids(&page.records, body)
        };
        assert_eq!(ids(r#"{"items":[]}"#), Ok(None));
        assert_eq!(
            ids(r#"{"items":[{"id":2},{"Id":5,"x":1},{"x":0,"id":9}]}"#),
            Ok(Some((2, 9)))
        );
        assert_eq!(
            ids(r#"{"items":[{"id":2},{"id":9},{"id":5}]}"#),
            Err("records are not sorted by id (id 5 after id 9): the endpoint ignores orderBy=id,asc; set `page_by: offset`".into())
        );
        for body in [
            r#"{"items":[{"id":1},{"x":2}]}"#,
            r#"{"items":[{"id":"3"}]}"#,
        ] {
            assert!(
                ids(body).is_err_and(|e| e.contains("integer `id` on every record")),
                "{body}"
            );
        }
    }

    #[test]
    fn v4_follows_its_next_cursor_or_link() {
        let next = |next| PageFacts {
            next: Some(next),
            ..facts(2, Some(9))
        };
        let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, base(), 2);
        assert!(fetched(p.advance(next("b2Zm"))).ends_with("limit=2&page=b2Zm"));
        // A link names the page; what it leaves out is ours.
        assert_eq!(
            fetched(p.advance(next("/api/x?page=c3"))),
            "https://acme.ilucca.net/api/x?page=c3&fields=id%2Ccollection.count&limit=2"
        );
        assert!(p.advance(next("https://evil.example/x")).is_err());
        // No `next` after a cursor or a link while the count says more:
        // the stream fails rather than end short; once the count is
        // reached, it is the last page.
        for first in ["b2Zm", "?limit=2&page=2"] {
            let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, base(), 2);
            let _ = p.advance(next(first));
            assert_eq!(
                p.advance(facts(2, Some(9))),
                Err("the API counts 9 records and 4 were read, but the page names no next page; the stream would end short".into()),
                "{first}"
            );
            let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, base(), 2);
            let _ = p.advance(next(first));
            assert_eq!(p.advance(facts(2, Some(4))), Ok(NextPage::Done), "{first}");
        }
        // No `next` at all: page numbers.
        let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, base(), 2);
        assert!(fetched(p.advance(facts(2, Some(3)))).ends_with("limit=2&page=2"));
        assert_eq!(p.advance(facts(1, Some(3))), Ok(NextPage::Done));
    }

    #[test]
    fn cursor_follows_same_host_links_only() {
        let link = |next| PageFacts {
            next: Some(next),
            ..facts(2, None)
        };
        let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, base(), 2);
        assert_eq!(
            fetched(p.advance(link("https://acme.ilucca.net/lucca-api/x?page=abc"))),
            "https://acme.ilucca.net/lucca-api/x?page=abc&fields=id%2Ccollection.count&limit=2"
        );
        assert!(p.advance(link("https://evil.example/x")).is_err());
        let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, base(), 2);
        assert_eq!(p.advance(facts(2, None)), Ok(NextPage::Done));
        // No link while `totalCount` says more: a failure, not the end.
        let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, base(), 2);
        assert!(p.advance(facts(2, Some(5))).is_err());
    }

    #[test]
    fn a_next_link_that_never_ends_fails_the_stream() {
        let link = |next, count| PageFacts {
            next: Some(next),
            ..facts(2, count)
        };
        let repeats = |result: Result<NextPage, String>| {
            result.is_err_and(|e| e.contains("one already read in this stream"))
        };
        // A cursor link naming the same page again.
        let same = "https://acme.ilucca.net/api/v3/users?page=abc";
        let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, base(), 2);
        let _ = fetched(p.advance(link(same, Some(5))));
        assert!(repeats(p.advance(link(same, Some(5)))));
        // v4 cursors going round: a, b, a.
        let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, base(), 2);
        let _ = fetched(p.advance(link("a", None)));
        let _ = fetched(p.advance(link("b", None)));
        assert!(repeats(p.advance(link("a", None))));
        // A link back to the first page, its parameters in another order.
        let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, base(), 2);
        assert!(repeats(p.advance(link("?limit=2&page=1", None))));
        // A new link each time, past twice the count and a page.
        let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, base(), 2);
        let mut pages = 0;
        let error = loop {
            pages += 1;
            assert!(pages < 100, "never stops");
            let next = format!("https://acme.ilucca.net/api/v3/users?page={pages}");
            let page = PageFacts {
                next: Some(&next),
                ..facts(2, Some(5))
            };
            match p.advance(page) {
                Ok(NextPage::Fetch(_)) => {}
                Ok(NextPage::Done) => panic!("done"),
                Err(e) => break e,
            }
        };
        assert_eq!(pages, 7, "{error}");
        assert!(
            error.starts_with(
                "the API counts 5 records, 14 were read and the page still names a next page"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_link_on_the_tenant_on_the_other_scheme_is_followed_on_ours() {
        let follow = |base: &str, next: &str| {
            let base = Url::parse(base).unwrap_or_else(|e| panic!("{e}"));
            let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, base, 2);
            let page = PageFacts {
                next: Some(next),
                ..facts(2, None)
            };
            p.advance(page).map(|n| match n {
                NextPage::Fetch(url) => url.to_string(),
                NextPage::Done => "done".to_owned(),
            })
        };
        // http on an https base: upgraded, never downgraded.
        assert_eq!(
            follow(
                "https://acme.ilucca.net/x",
                "http://acme.ilucca.net/x?page=2"
            )
            .as_deref(),
            Ok("https://acme.ilucca.net/x?page=2&limit=2")
        );
        assert_eq!(
            follow(
                "https://acme.ilucca.net/x",
                "HTTP://ACME.ilucca.net:80/x?page=2"
            )
            .as_deref(),
            Ok("https://acme.ilucca.net/x?page=2&limit=2")
        );
        // https on an http (loopback) base: followed where the tenant is.
        assert_eq!(
            follow("http://127.0.0.1:8080/x", "https://127.0.0.1:8080/x?page=2").as_deref(),
            Ok("http://127.0.0.1:8080/x?page=2&limit=2")
        );
        // Another host, another port, another scheme: refused, saying which.
        for (base, next, says) in [
            (
                "https://acme.ilucca.net/x",
                "https://evil.example/x",
                "another host (evil.example)",
            ),
            (
                "https://acme.ilucca.net/x",
                "http://acme.ilucca.net:8080/x",
                "another scheme and port (http:8080 for https:443)",
            ),
            (
                "https://acme.ilucca.net/x",
                "https://acme.ilucca.net:8443/x",
                "another port (8443 for 443)",
            ),
            (
                "http://127.0.0.1:8080/x",
                "http://127.0.0.1:9090/x",
                "another port (9090 for 8080)",
            ),
            (
                "https://acme.ilucca.net/x",
                "ftp://acme.ilucca.net/x",
                "another scheme (ftp: on https)",
            ),
        ] {
            match follow(base, next) {
                Err(e) => assert!(e.contains(says), "{next}: {e}"),
                other => panic!("{next}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_followed_link_keeps_the_parameters_it_does_not_set() {
        let v4 = Url::parse(
            "https://acme.ilucca.net/organization/structure/api/establishments?legalUnitId=1&legalUnitId=2&fields=id%2Cname&fields.root=count%2Cnext&sort=%2Bid",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let next = |next| PageFacts {
            next: Some(next),
            ..facts(2, Some(9))
        };
        let kept =
            "legalUnitId=1&legalUnitId=2&fields=id%2Cname&fields.root=count%2Cnext&sort=%2Bid";
        for (link, expected) in [
            (
                "?limit=2&page=2",
                format!(
                    "https://acme.ilucca.net/organization/structure/api/establishments?limit=2&page=2&{kept}"
                ),
            ),
            (
                "https://acme.ilucca.net/organization/structure/api/establishments?page=2&sort=-id",
                "https://acme.ilucca.net/organization/structure/api/establishments?page=2&sort=-id&legalUnitId=1&legalUnitId=2&fields=id%2Cname&fields.root=count%2Cnext&limit=2".to_owned(),
            ),
        ] {
            let mut p = Pager::new(PagingStyle::V4, PageBy::Offset, v4.clone(), 2);
            assert_eq!(fetched(p.advance(next(link))), expected, "{link}");
            // And the link after, from the followed page.
            let again = fetched(p.advance(next("?page=3")));
            assert!(
                again.ends_with("page=3") || again.contains("page=3&"),
                "{again}"
            );
            assert!(again.contains("fields.root=count%2Cnext"), "{again}");
            assert_eq!(again.matches("page=").count(), 1, "{again}");
        }
        // A /lucca-api/ link that names everything is followed as it is.
        let cursor =
            Url::parse("https://acme.ilucca.net/lucca-api/employees?include=links%2CtotalCount")
                .unwrap_or_else(|e| panic!("{e}"));
        let full = "https://acme.ilucca.net/lucca-api/employees?include=links%2CtotalCount&limit=2&page=abc";
        let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, cursor, 2);
        assert_eq!(fetched(p.advance(next(full))), full);
    }
}
