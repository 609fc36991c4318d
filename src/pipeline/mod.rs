//! Pipeline files: reading them with `file:line:col` errors, `${VAR}`
//! expansion, pure validation, and the resolved per-stream settings the
//! runner uses.
//!
//! ```text
//! load / load_with / parse
//!   -> serde_norway into PipelineSpec (syntax, unknown keys, types)
//!   -> ${VAR} expansion (base_url, api_key, api_key_file, params values,
//!      destination paths)
//!   -> validation (every problem, each at its key or value)
//!   -> Pipeline { spec, streams: Vec<ResolvedStream> }
//! ```

mod env;
mod error;
mod fields;
mod inherit;
mod locate;
pub mod naming;
pub mod slice;
pub mod spec;
mod validate;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use url::Url;

pub use error::{PipelineError, PipelineErrors, Secret};
pub use fields::{FieldError, FieldNode, contains_path, fields_query, leaf_paths, parse_fields};
pub use slice::{DateBound, ResolvedSlice, Step, Window};
pub use spec::*;

/// The JSON Schema of the pipeline format, generated from the types the
/// parser reads (editors use it through the yaml-language-server modeline).
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(PipelineSpec);
    schema.insert(
        "$id".into(),
        "https://github.com/lucca-sync/lucca-sync/schema/pipeline.schema.json".into(),
    );
    schema.insert("title".into(), "lucca-sync pipeline".into());
    schema.to_value()
}

use locate::{Locator, Pos, Seg};

/// A parsed, env-expanded, validated pipeline file.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it was read from (as given; used in messages).
    pub path: PathBuf,
    /// The file's content, with `${VAR}` references expanded.
    pub spec: PipelineSpec,
    /// The streams, in file order, with defaults applied.
    pub streams: Vec<ResolvedStream>,
    /// Where `api_key_file` (or else `source`) is, for run-time key errors.
    key_at: Pos,
    /// Where `base_url` is.
    base_url_at: Pos,
}

/// One stream with everything the runner needs resolved.
#[derive(Debug, Clone)]
pub struct ResolvedStream {
    /// The stream as written (params values env-expanded), with what it
    /// inherits from its catalog endpoint filled in (`endpoint` is then the
    /// path).
    pub spec: StreamSpec,
    /// The catalog endpoint the stream names, if it names one.
    pub catalog: Option<&'static crate::catalog::Endpoint>,
    /// Effective paging style: `paging`, the catalog's, or `v3`.
    pub paging: PagingStyle,
    /// Date-window slicing, parsed; `None` when the stream is not sliced.
    pub slice: Option<ResolvedSlice>,
    /// The parsed `fields` projection; empty when `fields` is not set.
    pub fields: Vec<FieldNode>,
    /// Effective page size: `page_size`, or the style's maximum.
    pub page_size: u32,
    /// How a `v3` stream pages: `page_by`, or by default `Id` when the
    /// primary key is exactly `id`, else `Offset`. Always `Offset` (and
    /// unused) for `v4` and `cursor` streams.
    pub page_by: PageBy,
    /// The primary key's field names (dotted when nested); empty if none.
    pub primary_key: Vec<String>,
}

impl ResolvedStream {
    /// The stream's name (its table or file name).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The `fields` query parameter in Lucca syntax (`id,manager[id,name]`),
    /// or `None` when the stream lists no fields.
    pub fn fields_query(&self) -> Option<String> {
        (!self.fields.is_empty()).then(|| fields_query(&self.fields))
    }
}

/// Largest API key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

impl Pipeline {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The API key: `source.api_key`, or the content of `source.api_key_file`
    /// (read now, trimmed). Errors name the file, never its content.
    pub fn api_key(&self) -> Result<Secret, PipelineError> {
        let source = &self.spec.source;
        if let Some(key) = &source.api_key {
            return Ok(Secret::new(key.as_str()));
        }
        let Some(file) = &source.api_key_file else {
            return Err(self.error_at(self.key_at, "source has no api_key nor api_key_file"));
        };
        self.read_secret_file(file, "api_key_file", "the API key")
    }

    /// The key of `pii: hash` columns: `pii_key`, or the content of
    /// `pii_key_file` (read now, trimmed); `None` when neither is set.
    pub fn pii_key(&self) -> Result<Option<Secret>, PipelineError> {
        if let Some(key) = &self.spec.pii_key {
            return Ok(Some(key.clone()));
        }
        match &self.spec.pii_key_file {
            Some(file) => self
                .read_secret_file(file, "pii_key_file", "the PII key")
                .map(Some),
            None => Ok(None),
        }
    }

    /// A key file's trimmed content; errors name the file, never its content.
    fn read_secret_file(
        &self,
        file: &std::path::Path,
        setting: &str,
        holds: &str,
    ) -> Result<Secret, PipelineError> {
        let shown = file.display();
        let mut text = String::new();
        let read =
            File::open(file).and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_string(&mut text));
        match read {
            Err(e) => {
                Err(self.error_at(self.key_at, format!("cannot read {setting} `{shown}`: {e}")))
            }
            Ok(n) if n as u64 > MAX_KEY_FILE_BYTES => Err(self.error_at(
                self.key_at,
                format!("{setting} `{shown}` is over 64 KiB: it should hold only {holds}"),
            )),
            Ok(_) => {
                let key = text.trim();
                validate::check_key_text(key, &format!("{setting} `{shown}`"))
                    .map_err(|message| self.error_at(self.key_at, message))?;
                Ok(Secret::new(key))
            }
        }
    }

    /// The tenant's base URL, parsed (validation already checked it).
    pub fn base_url(&self) -> Result<Url, PipelineError> {
        Url::parse(&self.spec.source.base_url).map_err(|e| {
            self.error_at(
                self.base_url_at,
                format!("base_url is not a valid URL ({e})"),
            )
        })
    }

    fn error_at(&self, pos: Pos, message: impl Into<String>) -> PipelineError {
        PipelineError {
            file: self.path.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }
}

/// Reads, expands (from the process environment) and validates a pipeline.
pub fn load(path: &Path) -> Result<Pipeline, PipelineErrors> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// Like [`load`], with `env` answering `${VAR}` lookups instead of the
/// process environment (e.g. `demo` pointing the pipeline at the sandbox).
pub fn load_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, PipelineErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PipelineError::whole_file(path, format!("cannot read the pipeline file: {e}"))
    })?;
    parse(path, &text, env)
}

/// Parses, expands and validates pipeline `text`; `path` is only used in
/// messages. Reads no file and no environment except through `env`.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, PipelineErrors> {
    let locator = Locator::new(text);
    let mut spec: PipelineSpec = serde_norway::from_str(text).map_err(|e| {
        if locator.is_empty() {
            PipelineError::whole_file(
                path,
                "the pipeline file is empty (it needs version, name, source, streams and \
                 destination)",
            )
        } else {
            yaml_error(path, &e, &locator)
        }
    })?;
    let mut issues = Vec::new();
    let unexpanded = env::expand_spec(&mut spec, text, &locator, env, &mut issues);
    let catalog = inherit::apply_catalog(&mut spec, &locator, &mut issues);
    let streams = validate::validate(&spec, &locator, &unexpanded, &catalog, &mut issues);
    if !issues.is_empty() {
        issues.sort_by_key(|issue| issue.pos);
        return Err(PipelineErrors(
            issues
                .into_iter()
                .map(|issue| PipelineError {
                    file: path.to_path_buf(),
                    line: issue.pos.line,
                    column: issue.pos.column,
                    message: issue.message,
                })
                .collect(),
        ));
    }
    let key_at = locator
        .find_value(&[Seg::Key("source"), Seg::Key("api_key_file")])
        .unwrap_or_else(|| locator.key(&[Seg::Key("source")]));
    let base_url_at = locator.value(&[Seg::Key("source"), Seg::Key("base_url")]);
    Ok(Pipeline {
        path: path.to_path_buf(),
        spec,
        streams,
        key_at,
        base_url_at,
    })
}

/// A problem found after deserialization, located in the text.
#[derive(Debug)]
pub(crate) struct Issue {
    pos: Pos,
    message: String,
}

/// A serde_norway error as `file:line:col: message`, without serde's own
/// " at line X column Y", and with a few messages made clearer.
fn yaml_error(path: &Path, error: &serde_norway::Error, locator: &Locator) -> PipelineError {
    let message = error.to_string();
    let Some(at) = error.location() else {
        return PipelineError::whole_file(path, message);
    };
    let suffix = format!(" at line {} column {}", at.line(), at.column());
    let message = message.replacen(&suffix, "", 1);
    let mut pos = Pos {
        line: at.line(),
        column: at.column(),
    };
    let (serde_path, detail) = match message.split_once(": ") {
        Some((p, d)) if !p.contains(' ') => (p, d),
        _ => ("", message.as_str()),
    };
    if let Some(key) = detail
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let owned = parse_serde_path(serde_path);
        let segs: Vec<Seg> = owned.iter().map(OwnedSeg::as_seg).collect();
        if let Some(repeat) = locator.find_repeated_key(&segs, key) {
            pos = repeat;
        }
    }
    let message = if serde_path == "destination"
        && (detail.ends_with("expected map with a single key")
            || detail.ends_with("expected enum DestinationSpec"))
    {
        "destination: set exactly one of `duckdb: { path: ... }` and `parquet: { dir: ... }`"
            .to_owned()
    } else {
        plain_types(&message)
    };
    PipelineError {
        file: path.to_path_buf(),
        line: pos.line,
        column: pos.column,
        message,
    }
}

/// serde's Rust type names in an "expected ..." message, in the words of
/// a YAML file (`expected u32` -> `expected a whole number, 0 or more`).
fn plain_types(message: &str) -> String {
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let words = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        _ if expected.starts_with("struct ") => "a mapping of `key: value` lines",
        _ => return message.to_owned(),
    };
    format!("{head}, expected {words}")
}

enum OwnedSeg {
    Key(String),
    Index(usize),
}

impl OwnedSeg {
    fn as_seg(&self) -> Seg<'_> {
        match self {
            OwnedSeg::Key(k) => Seg::Key(k),
            OwnedSeg::Index(i) => Seg::Index(*i),
        }
    }
}

/// serde_norway's path display (`streams[0].incremental`, `.` for the root)
/// as segments.
fn parse_serde_path(path: &str) -> Vec<OwnedSeg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            segs.push(OwnedSeg::Key(key.to_owned()));
        }
        for index in pieces {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                segs.push(OwnedSeg::Index(i));
            }
        }
    }
    segs
}

#[cfg(test)]
mod tests;
