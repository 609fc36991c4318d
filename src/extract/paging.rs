//! Lucca's paging styles and list envelopes: which URL asks for the next
//! page, and where the records and the total count are in a response body.

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use crate::pipeline::{PageBy, PagingStyle};

/// A list response, parsed only as far as the envelope: each record stays as
/// its raw JSON text for the transform to read once.
#[derive(Debug)]
pub struct ParsedPage {
    /// Byte ranges of the records inside the response body, in order.
    pub items: Vec<Range<usize>>,
    /// The total the API reported (`data.count`, `count` or `totalCount`).
    pub count: Option<u64>,
    /// The absolute URL of the next page (cursor paging).
    pub next_href: Option<String>,
}

/// Why a body could not be read as a list envelope.
#[derive(Debug)]
pub enum EnvelopeError {
    /// Not JSON, or JSON cut short: worth another attempt.
    InvalidJson(String),
    /// Valid JSON of the wrong shape: retrying will not help.
    Unexpected(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    data: Option<DataBlock<'a>>,
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default, rename = "totalCount")]
    total_count: Option<u64>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct DataBlock<'a> {
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    count: Option<u64>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<Link>,
}

#[derive(Deserialize)]
struct Link {
    #[serde(default)]
    href: Option<String>,
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

/// Reads the envelope of a list response. Accepts `data.items`/`data.count`,
/// a root `items`/`count`/`totalCount`, and ignores any other block such as
/// `header`.
pub fn parse_envelope(body: &str, style: PagingStyle) -> Result<ParsedPage, EnvelopeError> {
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| {
        if e.is_data() {
            EnvelopeError::Unexpected(format!("expected {} ({e})", expected_envelope(style)))
        } else {
            EnvelopeError::InvalidJson(e.to_string())
        }
    })?;
    let (items, count) = match (envelope.data, envelope.items) {
        (
            Some(DataBlock {
                items: Some(items),
                count,
            }),
            _,
        ) => (items, count),
        (_, Some(items)) => (items, envelope.count.or(envelope.total_count)),
        _ => {
            return Err(EnvelopeError::Unexpected(format!(
                "expected {}, found no `items` array",
                expected_envelope(style)
            )));
        }
    };
    let base = body.as_ptr() as usize;
    let items = items
        .iter()
        .map(|raw| {
            let text = raw.get();
            let start = text.as_ptr() as usize - base;
            start..start + text.len()
        })
        .collect();
    Ok(ParsedPage {
        items,
        count,
        next_href: envelope.links.and_then(|l| l.next).and_then(|n| n.href),
    })
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
    /// Cursor paging: the next URL, or the first page.
    Cursor(Option<Url>),
}

/// The sequence of page URLs of one stream.
#[derive(Debug)]
pub struct Pager {
    base: Url,
    page_size: u32,
    position: Position,
    read: u64,
    total: Option<u64>,
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
            base,
            page_size,
            position,
            read: 0,
            total: None,
        }
    }

    /// The total count reported by the first page, when the API gave one.
    pub fn total(&self) -> Option<u64> {
        self.total
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
            Position::Cursor(Some(next)) => return next.clone(),
            Position::Cursor(None) => {
                url.query_pairs_mut()
                    .append_pair("limit", &size.to_string());
            }
        }
        url
    }

    /// Moves past a page that held `items` records. `last_id` is the `id` of
    /// the page's last record (keyset paging), `count` the API's count and
    /// `next_href` the cursor link. Errors are messages for the caller to wrap.
    pub fn advance(
        &mut self,
        items: usize,
        count: Option<u64>,
        last_id: Option<i64>,
        next_href: Option<&str>,
    ) -> Result<NextPage, String> {
        let items = items as u64;
        let first_page = self.read == 0;
        self.read += items;
        if first_page {
            self.total = count;
        }
        let short = items < u64::from(self.page_size);
        if items == 0 {
            return Ok(NextPage::Done);
        }
        match &mut self.position {
            Position::Offset(offset) => {
                *offset += items;
                if short || count.is_some_and(|c| *offset >= c) {
                    return Ok(NextPage::Done);
                }
            }
            Position::AfterId(after) => {
                let Some(id) = last_id else {
                    return Err("keyset paging (page_by: id) needs an integer `id` on every record; set `page_by: offset`".into());
                };
                if after.is_some_and(|prev| id <= prev) {
                    return Err(format!(
                        "records are not sorted by id (id {id} after id {}): the endpoint ignores orderBy=id,asc; set `page_by: offset`",
                        after.unwrap_or_default()
                    ));
                }
                *after = Some(id);
                // Each keyset request counts what is left after the filter.
                if short || count.is_some_and(|c| c <= items) {
                    return Ok(NextPage::Done);
                }
            }
            Position::PageNumber(page) => {
                *page += 1;
                if short || count.is_some_and(|c| self.read >= c) {
                    return Ok(NextPage::Done);
                }
            }
            Position::Cursor(next) => {
                let Some(href) = next_href else {
                    return Ok(NextPage::Done);
                };
                let url = self
                    .base
                    .join(href)
                    .map_err(|e| format!("links.next.href `{href}` is not a URL: {e}"))?;
                if url.origin() != self.base.origin() {
                    return Err(format!(
                        "links.next.href points to another host ({}); refusing to send the API key there",
                        url.host_str().unwrap_or("?")
                    ));
                }
                *next = Some(url);
            }
        }
        Ok(NextPage::Fetch(self.current_url()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://acme.ilucca.net/api/v3/users?fields=id%2Ccollection.count")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reads_every_v3_envelope_variant() {
        let data = r#"{"header":{"generated":"x"},"data":{"items":[{"id":1},{"id":2}],"count":2}}"#;
        let page = parse_envelope(data, PagingStyle::V3).unwrap_or_else(|_| panic!("data"));
        assert_eq!(page.count, Some(2));
        assert_eq!(&data[page.items[1].clone()], r#"{"id":2}"#);
        let root = r#"{"items":[{"id":1}]}"#;
        let page = parse_envelope(root, PagingStyle::V3).unwrap_or_else(|_| panic!("root"));
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.count, None);
    }

    #[test]
    fn tells_broken_json_from_wrong_shape() {
        assert!(matches!(
            parse_envelope(r#"{"data":{"items":[{"id":1},"#, PagingStyle::V3),
            Err(EnvelopeError::InvalidJson(_))
        ));
        match parse_envelope(r#"{"data":{"id":1}}"#, PagingStyle::V3) {
            Err(EnvelopeError::Unexpected(m)) => assert_eq!(
                m,
                r#"expected a list envelope {"data": {"items": [...], "count": N}} or {"items": [...]}, found no `items` array"#
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn offset_paging_stops_at_count() {
        let mut p = Pager::new(PagingStyle::V3, PageBy::Offset, base(), 2);
        assert!(p.current_url().as_str().ends_with("paging=0%2C2"));
        let next = p.advance(2, Some(3), None, None);
        assert!(matches!(next, Ok(NextPage::Fetch(u)) if u.as_str().ends_with("paging=2%2C2")));
        assert_eq!(p.advance(1, Some(3), None, None), Ok(NextPage::Done));
    }

    #[test]
    fn keyset_paging_filters_on_last_id() {
        let mut p = Pager::new(PagingStyle::V3, PageBy::Id, base(), 2);
        let next = p.advance(2, Some(5), Some(7), None);
        match next {
            Ok(NextPage::Fetch(u)) => assert!(
                u.as_str()
                    .ends_with("orderBy=id%2Casc&id=greaterthan%2C7&paging=0%2C2"),
                "{u}"
            ),
            other => panic!("{other:?}"),
        }
        // Two left after id 9 and two read: done without an empty request.
        assert_eq!(p.advance(2, Some(2), Some(9), None), Ok(NextPage::Done));
        assert_eq!(p.total(), Some(5));
    }

    #[test]
    fn keyset_refuses_unsorted_ids() {
        let mut p = Pager::new(PagingStyle::V3, PageBy::Id, base(), 2);
        let _ = p.advance(2, Some(9), Some(7), None);
        assert!(p.advance(2, Some(9), Some(3), None).is_err());
    }

    #[test]
    fn cursor_follows_same_host_links_only() {
        let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, base(), 2);
        let next = p.advance(
            2,
            None,
            None,
            Some("https://acme.ilucca.net/lucca-api/x?page=abc"),
        );
        assert!(matches!(next, Ok(NextPage::Fetch(u)) if u.as_str().ends_with("page=abc")));
        assert!(
            p.advance(2, None, None, Some("https://evil.example/x"))
                .is_err()
        );
        let mut p = Pager::new(PagingStyle::Cursor, PageBy::Offset, base(), 2);
        assert_eq!(p.advance(2, None, None, None), Ok(NextPage::Done));
    }
}
