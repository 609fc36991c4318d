//! `${VAR}` expansion for the few pipeline values that may read the
//! environment (base URL, API key, key file, params values, destination
//! paths). `$${` writes a literal `${`. Messages name variables, never values.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::Issue;
use super::fields::is_identifier;
use super::locate::{Locator, Seg};
use super::spec::{DestinationSpec, PipelineSpec};

/// Which expandable values failed to expand; their own checks are skipped.
#[derive(Debug, Default)]
pub(crate) struct Unexpanded {
    pub base_url: bool,
    pub api_key: bool,
    pub api_key_file: bool,
    pub destination: bool,
}

/// Expands `${VAR}` in the values that support it, in place; reports every
/// unset, empty or malformed reference at its line:col in `text`.
pub(crate) fn expand_spec(
    spec: &mut PipelineSpec,
    text: &str,
    locator: &Locator,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<Issue>,
) -> Unexpanded {
    use Seg::{Index, Key};
    let cx = Cx { text, locator, env };
    let source = &mut spec.source;
    let mut failed = Unexpanded {
        base_url: !cx.expand(
            &mut source.base_url,
            &[Key("source"), Key("base_url")],
            issues,
        ),
        ..Unexpanded::default()
    };
    if let Some(key) = &mut source.api_key {
        failed.api_key = !cx.expand(key, &[Key("source"), Key("api_key")], issues);
    }
    if let Some(file) = &mut source.api_key_file {
        failed.api_key_file = !cx.expand_path(file, &[Key("source"), Key("api_key_file")], issues);
    }
    if let Some(key) = &mut spec.pii_key {
        cx.expand(key.expose_mut(), &[Key("pii_key")], issues);
    }
    if let Some(file) = &mut spec.pii_key_file {
        cx.expand_path(file, &[Key("pii_key_file")], issues);
    }
    for (i, stream) in spec.streams.iter_mut().enumerate() {
        for (name, value) in &mut stream.params {
            let path = [Key("streams"), Index(i), Key("params"), Key(name)];
            cx.expand(value, &path, issues);
        }
    }
    failed.destination = match &mut spec.destination {
        DestinationSpec::Duckdb(d) => !cx.expand_path(
            &mut d.path,
            &[Key("destination"), Key("duckdb"), Key("path")],
            issues,
        ),
        DestinationSpec::Parquet(p) => !cx.expand_path(
            &mut p.dir,
            &[Key("destination"), Key("parquet"), Key("dir")],
            issues,
        ),
    };
    failed
}

struct Cx<'a> {
    text: &'a str,
    locator: &'a Locator<'a>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Cx<'_> {
    /// Expands one value; false (and issues) when it cannot be expanded.
    fn expand(&self, value: &mut String, path: &[Seg], issues: &mut Vec<Issue>) -> bool {
        let problems = match expand(value, self.env) {
            Ok(expanded) => {
                *value = expanded;
                return true;
            }
            Err(problems) => problems,
        };
        let raw = self
            .locator
            .scalar_span(path)
            .and_then(|(start, end)| Some((start, self.text.get(start..end)?)));
        let mut reported = BTreeSet::new();
        let mut malformed = 0;
        for problem in problems {
            let n = match &problem.name {
                Some(name) if !reported.insert(name.clone()) => continue,
                Some(_) => 0,
                None => {
                    malformed += 1;
                    malformed - 1
                }
            };
            let name = problem.name.as_deref();
            let offset = raw
                .and_then(|(start, raw)| Some(start + find_in_raw(raw, name, n)?))
                .or_else(|| {
                    if self.locator.find_value(path).is_some() {
                        None
                    } else {
                        find_in_text(self.text, name?)
                    }
                });
            let pos = match offset {
                Some(offset) => self.locator.pos_of_offset(offset),
                None => self.locator.value(path),
            };
            issues.push(Issue {
                pos,
                message: problem.message,
            });
        }
        false
    }

    fn expand_path(&self, value: &mut PathBuf, path: &[Seg], issues: &mut Vec<Issue>) -> bool {
        let Some(text) = value.to_str() else {
            return true;
        };
        let mut text = text.to_owned();
        let ok = self.expand(&mut text, path, issues);
        if ok {
            *value = PathBuf::from(text);
        }
        ok
    }
}

/// A piece of a string value, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    /// Text copied as is (`$${` yields the literal `${`).
    Text(&'a str),
    /// `${NAME}` starting at this byte offset.
    Var { name: &'a str, offset: usize },
    /// A malformed `${` at this byte offset.
    Bad {
        offset: usize,
        message: &'static str,
    },
}

/// A reference that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Byte offset of the `${` in the value.
    pub offset: usize,
    /// Name of the variable, when the reference is well formed.
    pub name: Option<String>,
    /// What is wrong; never contains a variable's value.
    pub message: String,
}

const UNCLOSED: &str = "`${` is not closed by `}` (write `$${` for a literal `${`)";
const BAD_NAME: &str = "`${...}` must hold a variable name: letters, digits and `_`, \
                        not starting with a digit (write `$${` for a literal `${`)";

/// Splits a value into text and `${NAME}` references.
pub(crate) fn scan(s: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut text_start = 0;
    while let Some(rel) = s[i..].find('$') {
        let at = i + rel;
        let rest = &s[at..];
        if rest.starts_with("$${") {
            push_text(&mut tokens, &s[text_start..at]);
            tokens.push(Token::Text("${"));
            i = at + 3;
            text_start = i;
        } else if let Some(after) = rest.strip_prefix("${") {
            push_text(&mut tokens, &s[text_start..at]);
            match after.find('}') {
                None => {
                    tokens.push(Token::Bad {
                        offset: at,
                        message: UNCLOSED,
                    });
                    i = s.len();
                }
                Some(len) => {
                    let name = &after[..len];
                    tokens.push(if is_identifier(name) {
                        Token::Var { name, offset: at }
                    } else {
                        Token::Bad {
                            offset: at,
                            message: BAD_NAME,
                        }
                    });
                    i = at + 2 + len + 1;
                }
            }
            text_start = i;
        } else {
            i = at + 1;
        }
    }
    push_text(&mut tokens, &s[text_start..]);
    tokens
}

fn push_text<'a>(tokens: &mut Vec<Token<'a>>, text: &'a str) {
    if !text.is_empty() {
        tokens.push(Token::Text(text));
    }
}

/// Expands every `${NAME}` of `s` with `env`. An unset or empty variable is
/// a problem; all problems of the value are returned together.
pub(crate) fn expand(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(s.len());
    let mut problems = Vec::new();
    for token in scan(s) {
        match token {
            Token::Text(t) => out.push_str(t),
            Token::Var { name, offset } => match env(name) {
                Some(value) if !value.is_empty() => out.push_str(&value),
                found => problems.push(Problem {
                    offset,
                    name: Some(name.to_owned()),
                    message: if found.is_some() {
                        format!("environment variable `{name}` is set but empty")
                    } else {
                        format!("environment variable `{name}` is not set")
                    },
                }),
            },
            Token::Bad { offset, message } => problems.push(Problem {
                offset,
                name: None,
                message: message.to_owned(),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// True when the value holds `${` that is not the `$${` escape, i.e. it
/// would be expanded if the field supported expansion.
pub(crate) fn has_reference(s: &str) -> bool {
    scan(s)
        .iter()
        .any(|t| matches!(t, Token::Var { .. } | Token::Bad { .. }))
}

/// Byte offset, in `raw` (a value as written in the file, possibly quoted),
/// of the `n`-th malformed reference, or of the `n`-th reference to `name`.
pub(crate) fn find_in_raw(raw: &str, name: Option<&str>, n: usize) -> Option<usize> {
    scan(raw)
        .into_iter()
        .filter_map(|t| match (t, name) {
            (
                Token::Var {
                    name: found,
                    offset,
                },
                Some(name),
            ) if found == name => Some(offset),
            (Token::Bad { offset, .. }, None) => Some(offset),
            _ => None,
        })
        .nth(n)
}

/// Byte offset of the first `${NAME}` in the whole file text, outside
/// comments: the fallback when the value itself cannot be located.
pub(crate) fn find_in_text(text: &str, name: &str) -> Option<usize> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let code = strip_comment(line);
        if let Some(offset) = find_in_raw(code, Some(name), 0) {
            return Some(line_start + offset);
        }
        line_start += line.len();
    }
    None
}

/// The line without its `# comment` (a `#` at the start or after white
/// space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_blank = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if prev_blank => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        prev_blank = c == ' ' || c == '\t';
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("acme.ilucca.net".to_owned()),
            "KEY" => Some("s3cr3t".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references() {
        assert_eq!(
            expand("https://${HOST}/x", &env),
            Ok("https://acme.ilucca.net/x".to_owned())
        );
        assert_eq!(expand("${KEY}${KEY}", &env), Ok("s3cr3ts3cr3t".to_owned()));
        assert_eq!(
            expand("no refs $ here {}", &env),
            Ok("no refs $ here {}".to_owned())
        );
        assert_eq!(expand("$$", &env), Ok("$$".to_owned()));
    }

    #[test]
    fn dollar_dollar_brace_is_a_literal() {
        assert_eq!(expand("a$${HOST}b", &env), Ok("a${HOST}b".to_owned()));
        // Read left to right: `$` then the `$${` escape.
        assert_eq!(expand("$$${HOST}", &env), Ok("$${HOST}".to_owned()));
        assert!(!has_reference("$${X}"));
        assert!(has_reference("${X}"));
        assert!(has_reference("${"));
    }

    #[test]
    fn values_are_not_expanded_twice() {
        let env = |_: &str| Some("${HOST}".to_owned());
        assert_eq!(expand("${A}", &env), Ok("${HOST}".to_owned()));
    }

    #[test]
    fn problems_name_the_variable_and_its_offset() {
        assert_eq!(
            expand("x${MISSING}y${EMPTY}${HOST}", &env),
            Err(vec![
                Problem {
                    offset: 1,
                    name: Some("MISSING".to_owned()),
                    message: "environment variable `MISSING` is not set".to_owned(),
                },
                Problem {
                    offset: 12,
                    name: Some("EMPTY".to_owned()),
                    message: "environment variable `EMPTY` is set but empty".to_owned(),
                },
            ])
        );
    }

    #[test]
    fn malformed_references() {
        let problems = expand("a${1X}b${", &env).err().unwrap_or_default();
        let messages: Vec<_> = problems
            .iter()
            .map(|p| (p.offset, p.message.as_str()))
            .collect();
        assert_eq!(messages, vec![(1, BAD_NAME), (7, UNCLOSED)]);
        assert_eq!(
            BAD_NAME,
            "`${...}` must hold a variable name: letters, digits and `_`, not starting with a \
             digit (write `$${` for a literal `${`)"
        );
        let problems = expand("${}", &env).err().unwrap_or_default();
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn finds_references_in_raw_text() {
        assert_eq!(find_in_raw("\"$${A} ${A} ${A}\"", Some("A"), 0), Some(7));
        assert_eq!(find_in_raw("\"$${A} ${A} ${A}\"", Some("A"), 1), Some(12));
        assert_eq!(find_in_raw("${B}", Some("A"), 0), None);
        assert_eq!(find_in_raw("x ${1}", None, 0), Some(2));
        let text = "# uses ${A}\nname: x # ${A}\nkey: \"#\" ${A}\n";
        assert_eq!(
            find_in_text(text, "A"),
            Some(text.rfind("${A}").unwrap_or(0))
        );
        assert_eq!(find_in_text("# ${A}\n", "A"), None);
    }
}
