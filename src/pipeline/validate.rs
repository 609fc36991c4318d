//! Pure validation of a deserialized, env-expanded pipeline: no network and
//! no file reads. Every problem is reported, each at its key or value, and
//! the per-stream settings the runner needs are resolved (defaults applied).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use url::{Host, Url};

use super::Issue;
use super::env::{Unexpanded, has_reference};
use super::fields::{contains_path, is_dotted_path, is_identifier, leaf_paths, parse_fields};
use super::inherit::is_catalog_name;
use super::locate::{Locator, Seg};
use super::slice::{DateBound, ResolvedSlice, Step, parse_day};
use super::spec::{
    DestinationSpec, PageBy, PagingStyle, PiiPolicy, PipelineSpec, PrimaryKey, SliceSpec,
    StreamSpec, WriteMode,
};
use super::{FieldNode, ResolvedStream};
use crate::catalog::Endpoint;
use crate::pipeline::naming::stream_column;
use Seg::{Index, Key};

/// The message for a non-https base URL.
pub(crate) const HTTPS_ONLY: &str = "base_url must use https (plain http is only allowed for \
                                     loopback hosts such as the local sandbox)";

/// Why a stream name (lower-cased) is lucca-sync's own, if it is: its
/// tables (`_lucca_sync_runs`), Parquet run history (`_runs/`), view
/// (`lucca_sync_latest_runs`) and child tables (`users__user_work_cycles`).
fn reserved_name(lower: &str) -> Option<&'static str> {
    if lower.starts_with('_') {
        Some("names starting with `_` are lucca-sync's own tables and directories")
    } else if lower.starts_with("lucca_sync") {
        Some("names starting with `lucca_sync` are lucca-sync's own views")
    } else if lower.contains("__") {
        Some("`__` joins a stream's name to its child tables' (`users__user_work_cycles`)")
    } else {
        None
    }
}

fn not_expanded(what: &str) -> String {
    format!(
        "`${{...}}` is not expanded in {what}: only source.base_url, source.api_key, \
         source.api_key_file, pii_key, pii_key_file, params values and destination paths \
         read the environment"
    )
}

struct Checker<'a> {
    locator: &'a Locator<'a>,
    issues: &'a mut Vec<Issue>,
}

impl Checker<'_> {
    fn at_value(&mut self, path: &[Seg], message: String) {
        let pos = self.locator.value(path);
        self.issues.push(Issue { pos, message });
    }

    fn at_key(&mut self, path: &[Seg], message: String) {
        let pos = self.locator.key(path);
        self.issues.push(Issue { pos, message });
    }
}

/// Checks `spec` and resolves its streams. Problems go to `issues`; the
/// returned streams are only meaningful when no issue was added.
pub(crate) fn validate(
    spec: &PipelineSpec,
    locator: &Locator,
    unexpanded: &Unexpanded,
    catalog: &[Option<&'static Endpoint>],
    issues: &mut Vec<Issue>,
) -> Vec<ResolvedStream> {
    let mut c = Checker { locator, issues };

    if spec.version != 1 {
        c.at_value(
            &[Key("version")],
            format!(
                "version {} is not supported: this lucca-sync reads version 1",
                spec.version
            ),
        );
    }
    if has_reference(&spec.name) {
        c.at_value(&[Key("name")], not_expanded("name"));
    } else if spec.name.trim().is_empty() {
        c.at_value(&[Key("name")], "name must not be empty".to_owned());
    }

    check_source(spec, unexpanded, &mut c);

    if spec.streams.is_empty() {
        c.at_value(
            &[Key("streams")],
            "streams is empty: a pipeline needs at least one stream".to_owned(),
        );
    }
    // Lowercased name -> (name as written, index of its stream).
    let mut seen: Vec<(String, &str, usize)> = Vec::new();
    let mut resolved = Vec::with_capacity(spec.streams.len());
    for (i, stream) in spec.streams.iter().enumerate() {
        check_stream_name(i, stream, &mut seen, &mut c);
        let entry = catalog.get(i).copied().flatten();
        resolved.push(check_stream(i, stream, entry, &mut c));
    }

    // PII: a hashed column needs exactly one key.
    if spec.pii_key.is_some() && spec.pii_key_file.is_some() {
        c.at_key(
            &[Key("pii_key_file")],
            "set either pii_key or pii_key_file, not both".to_owned(),
        );
    }
    if spec.pii_key.is_none() && spec.pii_key_file.is_none() {
        for (i, stream) in spec.streams.iter().enumerate() {
            for (name, column) in &stream.columns {
                if column.pii == PiiPolicy::Hash {
                    c.at_value(
                        &[
                            Key("streams"),
                            Index(i),
                            Key("columns"),
                            Key(name),
                            Key("pii"),
                        ],
                        format!(
                            "column `{name}` is hashed but the pipeline has no pii_key \
                             (e.g. `pii_key: ${{LUCCA_PII_KEY}}`) nor pii_key_file"
                        ),
                    );
                }
            }
        }
    }
    if matches!(spec.destination, DestinationSpec::Duckdb(_)) {
        for (i, stream) in spec.streams.iter().enumerate() {
            if !stream.partition_by.is_empty() {
                c.at_key(
                    &[Key("streams"), Index(i), Key("partition_by")],
                    "partition_by only applies to a parquet destination".to_owned(),
                );
            }
        }
    }
    if !unexpanded.destination {
        let (path, empty) = match &spec.destination {
            DestinationSpec::Duckdb(d) => (
                [Key("destination"), Key("duckdb"), Key("path")],
                d.path.as_os_str().is_empty(),
            ),
            DestinationSpec::Parquet(p) => (
                [Key("destination"), Key("parquet"), Key("dir")],
                p.dir.as_os_str().is_empty(),
            ),
        };
        if empty {
            c.at_value(&path, "the destination path is empty".to_owned());
        }
    }
    resolved
}

fn check_source(spec: &PipelineSpec, unexpanded: &Unexpanded, c: &mut Checker) {
    let source = &spec.source;
    if !unexpanded.base_url
        && let Err(message) = check_base_url(&source.base_url)
    {
        c.at_value(&[Key("source"), Key("base_url")], message);
    }
    match (&source.api_key, &source.api_key_file) {
        (Some(_), Some(_)) => c.at_key(
            &[Key("source"), Key("api_key_file")],
            "set either api_key or api_key_file, not both".to_owned(),
        ),
        (None, None) => c.at_key(
            &[Key("source")],
            "source needs api_key (e.g. `api_key: ${LUCCA_API_KEY}`) or api_key_file".to_owned(),
        ),
        (Some(key), None) if !unexpanded.api_key => {
            if let Err(message) = check_key_text(key, "api_key") {
                c.at_value(&[Key("source"), Key("api_key")], message);
            }
        }
        (None, Some(file)) if !unexpanded.api_key_file && file.as_os_str().is_empty() => c
            .at_value(
                &[Key("source"), Key("api_key_file")],
                "api_key_file is empty".to_owned(),
            ),
        _ => {}
    }
    let positive = [
        ("max_attempts", source.max_attempts.map(u64::from)),
        ("connect_timeout_secs", source.connect_timeout_secs),
        ("request_timeout_secs", source.request_timeout_secs),
    ];
    for (name, value) in positive {
        if value == Some(0) {
            c.at_value(
                &[Key("source"), Key(name)],
                format!("{name} must be at least 1"),
            );
        }
    }
}

/// Checks an API key's text without ever quoting it.
pub(crate) fn check_key_text(key: &str, what: &str) -> Result<(), String> {
    if key.is_empty() {
        Err(format!("{what} is empty"))
    } else if key.chars().any(char::is_control) {
        Err(format!(
            "{what} contains a line break or another control character"
        ))
    } else {
        Ok(())
    }
}

/// An absolute URL with a host, no credentials, no query or fragment; https,
/// or http on a loopback host. Messages never quote the URL (it may come from
/// the environment).
pub(crate) fn check_base_url(raw: &str) -> Result<(), String> {
    let url = Url::parse(raw).map_err(|e| {
        format!("base_url must be an absolute URL such as https://acme.ilucca.net ({e})")
    })?;
    if url.host().is_none() {
        return Err("base_url must name a host, such as https://acme.ilucca.net".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("base_url must not contain a user name or password".to_owned());
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        _ => return Err(HTTPS_ONLY.to_owned()),
    }
    if url.path() != "/" {
        return Err(
            "base_url must be the tenant's root URL, such as https://acme.ilucca.net \
                    (each stream's endpoint gives the path)"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "base_url must not contain a query string or fragment (query parameters go in a \
             stream's `params`)"
                .to_owned(),
        );
    }
    Ok(())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn check_stream_name<'s>(
    i: usize,
    stream: &'s StreamSpec,
    seen: &mut Vec<(String, &'s str, usize)>,
    c: &mut Checker,
) {
    let path = [Key("streams"), Index(i), Key("name")];
    let name = stream.name.as_str();
    if name.is_empty() && c.locator.find_value(&path).is_none() {
        c.at_value(
            &[Key("streams"), Index(i)],
            format!(
                "streams[{i}]: missing field `name` (only a catalog endpoint, such as \
                 `endpoint: users`, names its stream by default)"
            ),
        );
        return;
    }
    if has_reference(name) {
        c.at_value(&path, not_expanded("stream names"));
        return;
    }
    if !is_identifier(name) {
        c.at_value(
            &path,
            format!(
                "stream name `{name}` is not valid: use ASCII letters, digits and `_`, not starting \
                 with a digit"
            ),
        );
        return;
    }
    let lower = name.to_ascii_lowercase();
    if let Some(why) = reserved_name(&lower) {
        c.at_value(&path, format!("stream name `{name}` is reserved: {why}"));
        return;
    }
    if let Some((_, first, j)) = seen.iter().find(|(l, _, _)| *l == lower) {
        let line = c
            .locator
            .value(&[Key("streams"), Index(*j), Key("name")])
            .line;
        let message = if *first == name {
            format!("duplicate stream name `{name}` (first used at line {line})")
        } else {
            format!(
                "stream name `{name}` clashes with `{first}` (line {line}): table and file names \
                 ignore letter case"
            )
        };
        c.at_value(&path, message);
        return;
    }
    seen.push((lower, name, i));
}

fn check_stream(
    i: usize,
    stream: &StreamSpec,
    entry: Option<&'static Endpoint>,
    c: &mut Checker,
) -> ResolvedStream {
    let at = |key: &'static str| [Key("streams"), Index(i), Key(key)];
    let style = stream.paging.unwrap_or_default();

    // endpoint (an unknown catalog name was reported with the catalog)
    let endpoint = stream.endpoint.as_str();
    if is_catalog_name(endpoint) {
        // Resolved to its path, or reported with a suggestion.
    } else if has_reference(endpoint) {
        c.at_value(&at("endpoint"), not_expanded("endpoint"));
    } else if !endpoint.starts_with('/') || !stays_on_tenant(endpoint) {
        c.at_value(
            &at("endpoint"),
            format!("endpoint `{endpoint}` must be a path on the tenant, such as /api/v3/users"),
        );
    } else if endpoint.contains(['?', '#']) {
        c.at_value(
            &at("endpoint"),
            format!(
                "endpoint `{endpoint}` must not contain a query string: put query parameters \
                 in `params`"
            ),
        );
    } else if endpoint.contains(['{', '}']) {
        // Documented paths such as leaveRequests/{id}/approvals name one
        // resource each; a literal `{id}` would only meet a 404 at run time.
        c.at_value(
            &at("endpoint"),
            format!(
                "endpoint `{endpoint}` has a placeholder: lucca-sync reads collections, so \
                 write a real path (the id itself, or the collection's path with a filter in \
                 `params`)"
            ),
        );
    }

    // page_size
    let max = style.max_page_size();
    let entry_max = entry
        .filter(|e| e.paging == style)
        .map_or(max, |e| e.max_page_size.min(max));
    let page_size = stream
        .page_size
        .unwrap_or(entry_max.min(style.default_page_size()));
    if page_size == 0 {
        c.at_value(&at("page_size"), "page_size must be at least 1".to_owned());
    } else if page_size > max {
        c.at_value(
            &at("page_size"),
            format!(
                "page_size {page_size} is above the maximum of {max} that {} endpoints accept",
                style.name()
            ),
        );
    } else if let Some(e) = entry.filter(|_| page_size > entry_max) {
        c.at_value(
            &at("page_size"),
            format!(
                "page_size {page_size} is above the maximum of {entry_max} that `{}` accepts",
                e.name
            ),
        );
    }

    // primary_key
    let primary_key: Vec<String> = stream
        .primary_key
        .as_ref()
        .map(|pk| pk.fields().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let pk_path = |j: usize| match &stream.primary_key {
        Some(PrimaryKey::Composite(_)) => {
            vec![Key("streams"), Index(i), Key("primary_key"), Index(j)]
        }
        _ => at("primary_key").to_vec(),
    };
    if matches!(&stream.primary_key, Some(PrimaryKey::Composite(k)) if k.is_empty()) {
        c.at_value(
            &at("primary_key"),
            "primary_key must list at least one field".to_owned(),
        );
    }
    let mut pk_ok = vec![false; primary_key.len()];
    let mut pk_seen = BTreeSet::new();
    for (j, field) in primary_key.iter().enumerate() {
        if !is_dotted_path(field) {
            c.at_value(
                &pk_path(j),
                format!("primary_key field `{field}` is not a valid field name"),
            );
        } else if !pk_seen.insert(field.as_str()) {
            c.at_value(&pk_path(j), format!("primary_key lists `{field}` twice"));
        } else {
            pk_ok[j] = true;
        }
    }

    // page_by
    let pk_is_id = primary_key.len() == 1 && primary_key[0] == "id";
    let page_by = match (style, stream.page_by) {
        (PagingStyle::V3, Some(page_by)) => {
            if page_by == PageBy::Id && !pk_is_id {
                c.at_value(
                    &at("page_by"),
                    "page_by: id needs primary_key: id".to_owned(),
                );
            }
            page_by
        }
        (PagingStyle::V3, None) if pk_is_id => PageBy::Id,
        (_, Some(_)) => {
            c.at_value(
                &at("page_by"),
                format!(
                    "page_by only applies to v3 paging; this stream uses {} paging",
                    style.name()
                ),
            );
            PageBy::Offset
        }
        (_, None) => PageBy::Offset,
    };

    // fields
    let (fields, fields_ok): (Vec<FieldNode>, bool) = match parse_fields(&stream.fields) {
        Ok(tree) => (tree, true),
        Err(errors) => {
            for error in errors {
                c.at_value(
                    &[Key("streams"), Index(i), Key("fields"), Index(error.item)],
                    error.message,
                );
            }
            (Vec::new(), false)
        }
    };
    let check_in_fields = fields_ok && !fields.is_empty();
    if check_in_fields {
        for (j, field) in primary_key.iter().enumerate() {
            if pk_ok[j] && !contains_path(&fields, field) {
                c.at_value(
                    &pk_path(j),
                    format!("primary_key field `{field}` is not in `fields`"),
                );
            }
        }
    }

    let dropped = |column: &str| {
        stream
            .columns
            .get(column)
            .is_some_and(|spec| spec.pii == PiiPolicy::Drop)
    };
    for (j, field) in primary_key.iter().enumerate() {
        let column = stream_column(stream, field);
        if pk_ok[j] && dropped(&column) {
            c.at_value(
                &pk_path(j),
                format!(
                    "primary_key field `{field}` is dropped (column `{column}` has pii: drop): \
                     merges and child tables need the key; hash it instead (pii: hash)"
                ),
            );
        }
    }

    // write_mode
    if stream.write_mode == WriteMode::Merge && stream.primary_key.is_none() {
        c.at_value(
            &at("write_mode"),
            "write_mode: merge needs a primary_key to match records on".to_owned(),
        );
    }

    // incremental
    if let Some(incremental) = &stream.incremental {
        let path = [
            Key("streams"),
            Index(i),
            Key("incremental"),
            Key("cursor_field"),
        ];
        let field = incremental.cursor_field.as_str();
        if !is_dotted_path(field) {
            c.at_value(
                &path,
                format!("cursor_field `{field}` is not a valid field name"),
            );
        } else if check_in_fields && !contains_path(&fields, field) {
            c.at_value(&path, format!("cursor_field `{field}` is not in `fields`"));
        }
        if stream.write_mode == WriteMode::Replace {
            c.at_key(
                &[Key("streams"), Index(i), Key("incremental")],
                "incremental reads only the records changed since the last run: with \
                 write_mode: replace they would replace the whole table; use write_mode: \
                 merge (or append)"
                    .to_owned(),
            );
        }
    }

    // columns
    let paths = leaf_paths(&fields);
    let columns: Vec<String> = paths.iter().map(|p| stream_column(stream, p)).collect();
    if check_in_fields {
        // Two fields in one column (`managerId` and `manager[id]`): which
        // one got the plain name would depend on the order of `fields`.
        // (`cultureID` and `cultureId` are one field in two spellings.)
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (path, column) in paths.iter().zip(&columns) {
            match seen.get(column.as_str()) {
                Some(first) if !first.eq_ignore_ascii_case(path) => c.at_value(
                    &at("fields"),
                    format!(
                        "fields `{first}` and `{path}` both make column `{column}`: store one \
                         under another name (columns: {{ {column}_2: {{ path: {path} }} }})"
                    ),
                ),
                Some(_) => {}
                None => {
                    seen.insert(column, path);
                }
            }
        }
        for (name, spec) in &stream.columns {
            if let Some(path) = &spec.path {
                if !is_dotted_path(path) || !contains_path(&fields, path) {
                    c.at_value(
                        &[
                            Key("streams"),
                            Index(i),
                            Key("columns"),
                            Key(name),
                            Key("path"),
                        ],
                        format!("columns: `{name}` reads `{path}`, which is not in `fields`"),
                    );
                }
            } else if !columns.contains(name) {
                c.at_key(
                    &[Key("streams"), Index(i), Key("columns"), Key(name)],
                    format!(
                        "columns: `{name}` is not a column of this stream (its columns: {})",
                        columns.join(", ")
                    ),
                );
            }
        }
    }

    // partition_by
    let mut partition_seen = BTreeSet::new();
    for (j, column) in stream.partition_by.iter().enumerate() {
        let path = [Key("streams"), Index(i), Key("partition_by"), Index(j)];
        if !partition_seen.insert(column.as_str()) {
            c.at_value(&path, format!("partition_by lists `{column}` twice"));
        } else if stream.write_mode == WriteMode::Merge
            && primary_key
                .iter()
                .any(|k| stream_column(stream, k) == *column)
        {
            // Partition columns live in directory names, not in the files
            // a merge reads its keys from.
            c.at_value(
                &path,
                format!(
                    "partition_by column `{column}` is part of the primary key: a merge cannot \
                     partition on it (partition on another column, or use write_mode: replace)"
                ),
            );
        } else if dropped(column) {
            c.at_value(
                &path,
                format!("partition_by column `{column}` has pii: drop: it is not written"),
            );
        } else if check_in_fields && !columns.contains(column) {
            c.at_value(
                &path,
                format!(
                    "partition_by column `{column}` is not a column of this stream (its columns: {})",
                    columns.join(", ")
                ),
            );
        }
    }

    // slice, and the filters the endpoint requires
    let slice = stream
        .slice
        .as_ref()
        .and_then(|slice| check_slice(i, stream, slice, c));
    if let Some(e) = entry {
        // The field the stream slices on, its slice valid or not (an
        // invalid one has its own error).
        let sliced_field = stream.slice.as_ref().and_then(|s| {
            s.field
                .as_ref()
                .or_else(|| e.slice.as_ref().and_then(|d| d.field.as_ref()))
        });
        for filter in &e.required_filters {
            let by_slice =
                slice.as_ref().is_some_and(|s| &s.field == filter) || sliced_field == Some(filter);
            if !by_slice && !stream.params.contains_key(filter) {
                c.at_value(
                    &at("endpoint"),
                    format!(
                        "`{}` requires a `{filter}` filter: set it in `params`, or slice on it \
                         (`slice: {{ field: {filter}, ... }}`)",
                        e.name
                    ),
                );
            }
        }
    }

    // params
    for name in stream.params.keys() {
        let path = [Key("streams"), Index(i), Key("params"), Key(name)];
        if let Some(message) = param_clash(name, stream, style, page_by) {
            c.at_key(&path, message);
        }
    }

    ResolvedStream {
        spec: stream.clone(),
        catalog: entry,
        paging: style,
        slice,
        fields,
        page_size,
        page_by,
        primary_key,
    }
}

/// True when joining `endpoint` to a tenant URL keeps the tenant's host:
/// `//host/x`, `/\host/x` or a tab in `/\t/host` would send the API key elsewhere.
fn stays_on_tenant(endpoint: &str) -> bool {
    const TENANT: &str = "tenant.invalid";
    Url::parse("https://tenant.invalid/")
        .and_then(|base| base.join(endpoint))
        .is_ok_and(|url| {
            url.scheme() == "https"
                && url.host_str() == Some(TENANT)
                && url.port().is_none()
                && url.username().is_empty()
        })
}

/// Why a `params` name may not be used, if it clashes with what lucca-sync
/// sends itself.
fn param_clash(
    name: &str,
    stream: &StreamSpec,
    style: PagingStyle,
    page_by: PageBy,
) -> Option<String> {
    if has_reference(name) {
        return Some(not_expanded("params names"));
    }
    if name.trim().is_empty() {
        return Some("params has an empty name".to_owned());
    }
    let paging_params: &[&str] = match style {
        PagingStyle::V3 => &["paging"],
        PagingStyle::V4 | PagingStyle::Cursor => &["limit", "page"],
    };
    if paging_params.contains(&name) {
        return Some(format!(
            "params must not set `{name}`: lucca-sync pages by itself (see page_size)"
        ));
    }
    if name == "fields" {
        return Some("params must not set `fields`: list them in the stream's `fields`".to_owned());
    }
    if style == PagingStyle::V3 && page_by == PageBy::Id && (name == "orderBy" || name == "id") {
        return Some(format!(
            "params must not set `{name}` when paging by id (set `page_by: offset` to filter or \
             sort on it yourself)"
        ));
    }
    if let Some(field) = stream.slice.as_ref().and_then(|s| s.field.as_deref())
        && field == name
    {
        return Some(format!(
            "params must not set `{name}`: the stream is sliced on it (see `slice`)"
        ));
    }
    match &stream.incremental {
        Some(inc) if inc.cursor_field == name => Some(format!(
            "params must not set `{name}`: incremental sync filters on it"
        )),
        _ => None,
    }
}

/// Checks a stream's `slice` (after the catalog's defaults were merged in)
/// and parses it; `None` when it has a problem (reported).
fn check_slice(
    i: usize,
    stream: &StreamSpec,
    slice: &SliceSpec,
    c: &mut Checker,
) -> Option<ResolvedSlice> {
    let at = |key: &'static str| [Key("streams"), Index(i), Key("slice"), Key(key)];
    let whole = [Key("streams"), Index(i), Key("slice")];
    let mut ok = true;
    let mut required = |value: &Option<String>, key: &str, c: &mut Checker| {
        if value.is_none() {
            c.at_value(&whole, format!("slice needs `{key}`"));
            ok = false;
        }
    };
    required(&slice.field, "field", c);
    required(&slice.from, "from", c);
    required(&slice.step, "step", c);
    if stream.incremental.is_some() {
        c.at_key(
            &whole,
            "a sliced stream cannot also be `incremental`: with write_mode merge or append, \
             later runs re-read only the recent windows (see `slice.lookback`)"
                .to_owned(),
        );
        ok = false;
    }
    let field = slice.field.clone().unwrap_or_default();
    if !field.is_empty() && !is_dotted_path(&field) {
        c.at_value(
            &at("field"),
            format!("slice field `{field}` is not a valid field name"),
        );
        ok = false;
    }
    let parsed = |key: &'static str, value: Option<&str>, c: &mut Checker| {
        let value = value?;
        let result = match key {
            "from" => parse_day(value).map(|d| (Some(d), None, None)),
            "to" => DateBound::parse(value).map(|b| (None, Some(b), None)),
            _ => Step::parse(value).map(|s| (None, None, Some(s))),
        };
        result
            .map_err(|message| c.at_value(&at(key), format!("slice {key}: {message}")))
            .ok()
    };
    let from = parsed("from", slice.from.as_deref(), c).and_then(|p| p.0);
    let to = match slice.to.as_deref() {
        None => Some(DateBound::Today(None)),
        Some(text) => parsed("to", Some(text), c).and_then(|p| p.1),
    };
    let step = parsed("step", slice.step.as_deref(), c).and_then(|p| p.2);
    let lookback = match slice.lookback.as_deref() {
        None => step,
        Some(text) => parsed("lookback", Some(text), c).and_then(|p| p.2),
    };
    if let (Some(from), Some(DateBound::Date(to))) = (from, to)
        && to < from
    {
        c.at_value(
            &at("to"),
            format!("slice to ({to}) is before from ({from})"),
        );
        ok = false;
    }
    match (ok, from, to, step, lookback) {
        (true, Some(from), Some(to), Some(step), Some(lookback)) => Some(ResolvedSlice {
            field,
            from,
            to,
            step,
            lookback,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        for ok in [
            "https://acme.ilucca.net",
            "https://acme.ilucca.net/",
            "https://acme-sbx.sandbox.eu1.luccasoftware.com",
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:3000/",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("http://acme.ilucca.net", HTTPS_ONLY.to_owned()),
            ("http://10.0.0.1", HTTPS_ONLY.to_owned()),
            ("http://localhost.evil.com", HTTPS_ONLY.to_owned()),
            ("ftp://acme.ilucca.net", HTTPS_ONLY.to_owned()),
            (
                "acme.ilucca.net",
                "base_url must be an absolute URL such as https://acme.ilucca.net (relative URL \
                 without a base)"
                    .to_owned(),
            ),
            (
                "mailto:x@y.z",
                "base_url must name a host, such as https://acme.ilucca.net".to_owned(),
            ),
            (
                "https://user:pw@acme.ilucca.net",
                "base_url must not contain a user name or password".to_owned(),
            ),
            (
                "https://acme.ilucca.net/api",
                "base_url must be the tenant's root URL, such as https://acme.ilucca.net (each \
                 stream's endpoint gives the path)"
                    .to_owned(),
            ),
            (
                "https://acme.ilucca.net/?a=b",
                "base_url must not contain a query string or fragment (query parameters go in a \
                 stream's `params`)"
                    .to_owned(),
            ),
        ];
        for (url, message) in cases {
            assert_eq!(check_base_url(url), Err(message), "{url}");
        }
    }

    #[test]
    fn endpoints_stay_on_the_tenant() {
        assert!(stays_on_tenant("/api/v3/users"));
        assert!(stays_on_tenant(
            "/organization/structure/api/establishments"
        ));
        assert!(!stays_on_tenant("//evil.com/x"));
        assert!(!stays_on_tenant("/\\evil.com/x"));
        assert!(!stays_on_tenant("/\t/evil.com/x"));
        assert!(!stays_on_tenant("/\n/evil.com/x"));
    }

    #[test]
    fn key_text() {
        assert_eq!(check_key_text("abc-123", "api_key"), Ok(()));
        assert_eq!(
            check_key_text("", "api_key"),
            Err("api_key is empty".to_owned())
        );
        assert_eq!(
            check_key_text("abc\n", "api_key"),
            Err("api_key contains a line break or another control character".to_owned())
        );
    }
}
