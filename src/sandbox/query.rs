//! Query-string semantics of the fake tenant: the v3 `fields` projection
//! grammar, filter operators, `paging` and `orderBy`, and the selection of
//! matching records from the compact index.

use serde_json::{Map, Value};

use super::data::{Collection, Meta, NO_DATE, parse_naive_ms};

/// Query parameters in order, names compared case-insensitively (Lucca's
/// .NET back end does).
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(raw: &str) -> Params {
        Params(
            url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A `fields` projection tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Proj {
    /// The whole value.
    All,
    /// Only these keys (matched case-insensitively), each with its own projection.
    Fields(Vec<(String, Proj)>),
}

static ALL: Proj = Proj::All;

impl Proj {
    /// The projection of `key` if it is selected.
    pub fn lookup(&self, key: &str) -> Option<&Proj> {
        match self {
            Proj::All => Some(&ALL),
            Proj::Fields(list) => list
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, p)| p),
        }
    }

    /// What Lucca returns without `fields`: `id`, `name`, `url`.
    pub fn default_v3() -> Proj {
        Proj::Fields(
            ["id", "name", "url"]
                .iter()
                .map(|k| ((*k).to_owned(), Proj::All))
                .collect(),
        )
    }
}

/// A parsed `fields` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldsSpec {
    /// Item projection; `None` when only `collection.count` was asked.
    pub items: Option<Proj>,
    /// `collection.count` was asked.
    pub count: bool,
}

/// Parses `fields=id,name,manager[id,name],department.name,collection.count`.
pub(crate) fn parse_fields(raw: &str) -> Result<FieldsSpec, String> {
    let mut list = parse_list(raw)?;
    let mut count = false;
    if let Some(pos) = list
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case("collection"))
    {
        let (_, p) = list.remove(pos);
        count = p.lookup("count").is_some();
    }
    let items = if list.is_empty() {
        if count {
            None
        } else {
            Some(Proj::default_v3())
        }
    } else {
        Some(Proj::Fields(list))
    };
    Ok(FieldsSpec { items, count })
}

fn parse_list(s: &str) -> Result<Vec<(String, Proj)>, String> {
    let mut out = Vec::new();
    for tok in split_top(s)? {
        let tok = tok.trim();
        if tok.is_empty() {
            continue;
        }
        let (name, proj) = parse_token(tok)?;
        merge_into(&mut out, name, proj);
    }
    Ok(out)
}

/// Splits on commas outside brackets.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ']' in fields at byte {i}"))?;
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '[' in fields".to_owned());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_token(tok: &str) -> Result<(String, Proj), String> {
    let dot = tok.find('.');
    let bracket = tok.find('[');
    let (name, proj) = match (dot, bracket) {
        (Some(d), b) if b.is_none_or(|b| d < b) => {
            let (sub_name, sub) = parse_token(tok[d + 1..].trim())?;
            (&tok[..d], Proj::Fields(vec![(sub_name, sub)]))
        }
        (_, Some(b)) => {
            let inner = tok[b + 1..]
                .strip_suffix(']')
                .ok_or_else(|| format!("fields: text after ']' in {tok:?}"))?;
            (&tok[..b], Proj::Fields(parse_list(inner)?))
        }
        _ => (tok, Proj::All),
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("fields: empty field name in {tok:?}"));
    }
    Ok((name.to_owned(), proj))
}

fn merge_into(list: &mut Vec<(String, Proj)>, name: String, proj: Proj) {
    match list.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&name)) {
        Some((_, existing)) => merge(existing, proj),
        None => list.push((name, proj)),
    }
}

fn merge(a: &mut Proj, b: Proj) {
    match (a, b) {
        (Proj::All, _) => {}
        (a, Proj::All) => *a = Proj::All,
        (Proj::Fields(l), Proj::Fields(m)) => {
            for (n, p) in m {
                merge_into(l, n, p);
            }
        }
    }
}

/// A filter condition on an integer-like value (ids, naive milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cmp {
    In(Vec<i64>),
    Ne(i64),
    Gt(i64),
    Ge(i64),
    Lt(i64),
    Le(i64),
    Between(i64, i64),
}

impl Cmp {
    /// Parses `5`, `1,2,3`, `greaterthan,5`, `since,2025-01-01T00:00:00`,
    /// `between,a,b`, ... with `value` parsing each operand.
    pub fn parse(
        param: &str,
        raw: &str,
        value: impl Fn(&str) -> Option<i64>,
    ) -> Result<Cmp, String> {
        let bad = |v: &str| format!("{param}: invalid value {v:?}");
        let mut parts = raw.split(',').map(str::trim);
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let one = |rest: &[&str]| -> Result<i64, String> {
            match rest {
                [v] => value(v).ok_or_else(|| bad(v)),
                _ => Err(format!(
                    "{param}: operator {head:?} takes exactly one value"
                )),
            }
        };
        match head.to_ascii_lowercase().as_str() {
            "notequal" => Ok(Cmp::Ne(one(&rest)?)),
            "greaterthan" => Ok(Cmp::Gt(one(&rest)?)),
            "greaterthanorequal" | "since" => Ok(Cmp::Ge(one(&rest)?)),
            "lessthan" => Ok(Cmp::Lt(one(&rest)?)),
            "lessthanorequal" | "until" => Ok(Cmp::Le(one(&rest)?)),
            "equal" => Ok(Cmp::In(vec![one(&rest)?])),
            "between" => match rest.as_slice() {
                [a, b] => Ok(Cmp::Between(
                    value(a).ok_or_else(|| bad(a))?,
                    value(b).ok_or_else(|| bad(b))?,
                )),
                _ => Err(format!("{param}: between takes two values")),
            },
            _ => std::iter::once(head)
                .chain(rest.iter().copied())
                .map(|v| value(v).ok_or_else(|| bad(v)))
                .collect::<Result<Vec<_>, _>>()
                .map(Cmp::In),
        }
    }

    pub fn matches(&self, x: i64) -> bool {
        match self {
            Cmp::In(v) => v.contains(&x),
            Cmp::Ne(v) => x != *v,
            Cmp::Gt(v) => x > *v,
            Cmp::Ge(v) => x >= *v,
            Cmp::Lt(v) => x < *v,
            Cmp::Le(v) => x <= *v,
            Cmp::Between(a, b) => x >= *a && x <= *b,
        }
    }

    /// Inclusive bounds outside which nothing matches.
    pub fn bounds(&self) -> (i64, i64) {
        match self {
            Cmp::In(v) => (
                v.iter().copied().min().unwrap_or(i64::MAX),
                v.iter().copied().max().unwrap_or(i64::MIN),
            ),
            Cmp::Ne(_) => (i64::MIN, i64::MAX),
            Cmp::Gt(v) => (v.saturating_add(1), i64::MAX),
            Cmp::Ge(v) => (*v, i64::MAX),
            Cmp::Lt(v) => (i64::MIN, v.saturating_sub(1)),
            Cmp::Le(v) => (i64::MIN, *v),
            Cmp::Between(a, b) => (*a, *b),
        }
    }
}

/// A parsed v3 list request.
#[derive(Debug, Clone)]
pub(crate) struct V3Query {
    pub offset: usize,
    pub limit: usize,
    pub fields: FieldsSpec,
    pub former: bool,
    pub id: Vec<Cmp>,
    pub modified: Vec<Cmp>,
    /// Filters on other fields the endpoint allows (`date=between,a,b`,
    /// `leavePeriod.ownerId=greaterthan,0`), read from each record.
    pub extra: Vec<(String, Cmp)>,
    pub desc: bool,
}

/// Largest `paging` limit of the sandbox's users endpoint (Lucca's
/// documented maximum); the other v3 endpoints take up to
/// [`V3_MAX_LIMIT_OTHERS`] (leaves are documented up to 10000).
pub(crate) const V3_MAX_LIMIT: usize = 1000;
pub(crate) const V3_MAX_LIMIT_OTHERS: usize = 10_000;

/// An operand of a filter on a record's field: an integer, a boolean (1 or
/// 0), or a naive date/datetime as milliseconds.
fn operand(s: &str) -> Option<i64> {
    match s.trim() {
        t if t.eq_ignore_ascii_case("true") => Some(1),
        t if t.eq_ignore_ascii_case("false") => Some(0),
        t => t.parse().ok().or_else(|| parse_naive_ms(t)),
    }
}

/// The value at dotted `path` of a record (keys matched case-insensitively),
/// as a filter operand; `None` when absent, null or not comparable.
fn record_operand(record: &Map<String, Value>, path: &str) -> Option<i64> {
    fn find<'v>(m: &'v Map<String, Value>, k: &str) -> Option<&'v Value> {
        m.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    }
    let mut parts = path.split('.');
    let mut value = find(record, parts.next()?)?;
    for part in parts {
        value = match value {
            Value::Object(m) => find(m, part)?,
            _ => return None,
        };
    }
    match value {
        Value::Number(n) => n.as_i64(),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => operand(s),
        _ => None,
    }
}

impl V3Query {
    /// Parses a v3 list request; `filterable` names the fields, other than
    /// `id` and `modifiedAt`, that the endpoint filters on, `max_limit` its
    /// largest page.
    pub fn parse(p: &Params, filterable: &[&str], max_limit: usize) -> Result<V3Query, String> {
        let (offset, limit) = match p.get("paging") {
            None => (0, V3_MAX_LIMIT),
            Some(raw) => {
                let (o, l) = raw
                    .split_once(',')
                    .ok_or_else(|| format!("paging: expected 'offset,limit', got {raw:?}"))?;
                let o: usize = o
                    .trim()
                    .parse()
                    .map_err(|_| format!("paging: invalid offset {o:?}"))?;
                let l: usize = l
                    .trim()
                    .parse()
                    .map_err(|_| format!("paging: invalid limit {l:?}"))?;
                (o, l)
            }
        };
        if limit > max_limit {
            return Err(format!(
                "paging: limit {limit} exceeds the maximum page size of {max_limit}"
            ));
        }
        let fields = match p.get("fields").map(str::trim) {
            None | Some("") => FieldsSpec {
                items: Some(Proj::default_v3()),
                count: false,
            },
            Some(raw) => parse_fields(raw)?,
        };
        let former = p
            .get("formerEmployees")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let id = p
            .all("id")
            .map(|v| Cmp::parse("id", v, |s| s.parse().ok()))
            .collect::<Result<Vec<_>, _>>()?;
        let modified = p
            .all("modifiedAt")
            .map(|v| Cmp::parse("modifiedAt", v, parse_naive_ms))
            .collect::<Result<Vec<_>, _>>()?;
        let mut extra = Vec::new();
        for name in filterable {
            for raw in p.all(name) {
                extra.push(((*name).to_owned(), Cmp::parse(name, raw, operand)?));
            }
        }
        let desc = match p.get("orderBy") {
            None => false,
            Some(raw) => {
                let mut it = raw.split(',').map(str::trim);
                let prop = it.next().unwrap_or_default();
                if !prop.eq_ignore_ascii_case("id") {
                    return Err(format!(
                        "orderBy: the sandbox only sorts by id, not {prop:?}"
                    ));
                }
                match it.next().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("asc") => false,
                    Some("desc") => true,
                    Some(other) => return Err(format!("orderBy: invalid direction {other:?}")),
                }
            }
        };
        Ok(V3Query {
            offset,
            limit,
            fields,
            former,
            id,
            modified,
            extra,
            desc,
        })
    }

    fn keeps(&self, m: &Meta, record: Option<&Map<String, Value>>, apply_former: bool) -> bool {
        (!apply_former || self.former || !m.former)
            && self.id.iter().all(|c| c.matches(i64::from(m.id)))
            && self
                .modified
                .iter()
                .all(|c| m.modified_ms != NO_DATE && c.matches(m.modified_ms))
            && self.extra.iter().all(|(path, c)| {
                record
                    .and_then(|r| record_operand(r, path))
                    .is_some_and(|x| c.matches(x))
            })
    }

    /// The page of matching records and, when `collection.count` was asked,
    /// the number of matching records before paging.
    pub fn select(&self, coll: &Collection, apply_former: bool) -> (Vec<Meta>, Option<usize>) {
        let (lo, hi) = self
            .id
            .iter()
            .map(Cmp::bounds)
            .fold((i64::MIN, i64::MAX), |(a, b), (c, d)| (a.max(c), b.min(d)));
        let start = coll.metas.partition_point(|m| i64::from(m.id) < lo);
        let end = coll.metas.partition_point(|m| i64::from(m.id) <= hi);
        let end = end.max(start);
        let exclude_former = apply_former && !self.former;
        let ranged = self.modified.is_empty()
            && self.extra.is_empty()
            && self.id.iter().all(|c| match c {
                Cmp::Ne(_) => false,
                Cmp::In(v) => v.len() <= 1,
                _ => true,
            });
        if ranged {
            return self.select_range(coll, start, end, exclude_former);
        }
        let slice = coll.metas.get(start..end).unwrap_or_default();
        let keep = |m: &Meta| self.keeps(m, coll.records.get(m.fixture as usize), apply_former);
        let (page, count) = if self.desc {
            self.page(slice.iter().rev(), keep)
        } else {
            self.page(slice.iter(), keep)
        };
        (page, self.fields.count.then_some(count))
    }

    /// [`V3Query::select`] when the filters reduce to an id range (the
    /// common keyset and offset cases): counts and skips through the
    /// collection's prefix sums instead of scanning.
    fn select_range(
        &self,
        coll: &Collection,
        start: usize,
        end: usize,
        exclude_former: bool,
    ) -> (Vec<Meta>, Option<usize>) {
        let total = coll.matching(start, end, exclude_former);
        let count = self.fields.count.then_some(total);
        if self.offset >= total || self.limit == 0 {
            return (Vec::new(), count);
        }
        let keep = |m: &&Meta| !exclude_former || !m.former;
        let take = self.limit.min(total - self.offset);
        let page = if self.desc {
            // The last `j` with `offset` matching records in `metas[j..end]`.
            let k = first_true(start, end, |j| {
                coll.matching(j, end, exclude_former) < self.offset
            });
            let j = k.saturating_sub(1).max(start);
            coll.metas[start..j]
                .iter()
                .rev()
                .filter(keep)
                .take(take)
                .copied()
                .collect()
        } else {
            // The first `i` with `offset` matching records in `metas[start..i]`.
            let i = first_true(start, end, |i| {
                coll.matching(start, i, exclude_former) >= self.offset
            });
            coll.metas[i.min(end)..end]
                .iter()
                .filter(keep)
                .take(take)
                .copied()
                .collect()
        };
        (page, count)
    }

    fn page<'a>(
        &self,
        it: impl Iterator<Item = &'a Meta>,
        keep: impl Fn(&Meta) -> bool,
    ) -> (Vec<Meta>, usize) {
        let mut page = Vec::with_capacity(self.limit.min(V3_MAX_LIMIT_OTHERS));
        let mut count = 0usize;
        if self.limit == 0 && !self.fields.count {
            return (page, 0);
        }
        for m in it.filter(|m| keep(m)) {
            if count >= self.offset && page.len() < self.limit {
                page.push(*m);
            }
            count += 1;
            if !self.fields.count && page.len() >= self.limit {
                break;
            }
        }
        (page, count)
    }
}

/// The smallest `i` in `lo..=hi` for which `pred` (false, then true) holds,
/// or `hi + 1`.
fn first_true(lo: usize, hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (lo, hi + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}
