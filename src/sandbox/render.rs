//! Serialisation of records as the fake tenant answers them: projection by
//! `fields` straight into the output buffer (no intermediate JSON tree for
//! synthetic users) and relative `url`s turned absolute on the way out.

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

use super::data::{Collection, Core, Generator, Meta, Node, USER_KEYS};
use super::query::Proj;

/// A JSON value seen through a projection; strings under a `url` key that
/// start with `/` get `base` prepended.
pub(crate) struct Projected<'a> {
    pub value: &'a Value,
    pub proj: &'a Proj,
    pub base: &'a str,
    pub is_url: bool,
}

impl Serialize for Projected<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::String(text) if self.is_url && text.starts_with('/') => {
                s.collect_str(&format_args!("{}{}", self.base, text))
            }
            Value::Object(map) => ProjectedMap {
                map,
                proj: self.proj,
                base: self.base,
            }
            .serialize(s),
            Value::Array(items) => {
                let mut out = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&Projected {
                        value: v,
                        proj: self.proj,
                        base: self.base,
                        is_url: false,
                    })?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

/// A JSON object seen through a projection, keys in the record's order and
/// spelling.
pub(crate) struct ProjectedMap<'a> {
    pub map: &'a Map<String, Value>,
    pub proj: &'a Proj,
    pub base: &'a str,
}

impl Serialize for ProjectedMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_map(None)?;
        for (k, v) in self.map {
            if let Some(sub) = self.proj.lookup(k) {
                out.serialize_entry(
                    k,
                    &Projected {
                        value: v,
                        proj: sub,
                        base: self.base,
                        is_url: k == "url",
                    },
                )?;
            }
        }
        out.end()
    }
}

/// A synthetic value seen through a projection (same `url` rule as
/// [`Projected`]).
struct NodeView<'a> {
    node: &'a Node,
    proj: &'a Proj,
    base: &'a str,
    is_url: bool,
}

impl Serialize for NodeView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.node {
            Node::Null => s.serialize_unit(),
            Node::Int(i) => s.serialize_u64(*i),
            Node::Str(text) if self.is_url && text.starts_with('/') => {
                s.collect_str(&format_args!("{}{}", self.base, text))
            }
            Node::Str(text) => s.serialize_str(text),
            Node::Static(text) => s.serialize_str(text),
            Node::Obj(entries) => {
                let mut out = s.serialize_map(None)?;
                for (k, v) in entries {
                    if let Some(sub) = self.proj.lookup(k) {
                        out.serialize_entry(
                            k,
                            &NodeView {
                                node: v,
                                proj: sub,
                                base: self.base,
                                is_url: *k == "url",
                            },
                        )?;
                    }
                }
                out.end()
            }
            Node::Arr(items) => {
                let mut out = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&NodeView {
                        node: v,
                        proj: self.proj,
                        base: self.base,
                        is_url: false,
                    })?;
                }
                out.end()
            }
        }
    }
}

/// A synthetic user seen through a projection: only the selected fields are
/// ever computed.
struct SynthUser<'a> {
    generator: &'a Generator,
    core: Core,
    modified_ms: i64,
    /// The selected top-level keys (see [`Renderer::new`]).
    plan: &'a [(&'static str, &'a Proj)],
    base: &'a str,
}

impl Serialize for SynthUser<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_map(Some(self.plan.len()))?;
        for &(key, sub) in self.plan {
            let key = if key == "cultureID" {
                self.core.culture_key()
            } else {
                key
            };
            let node = self.generator.field(&self.core, self.modified_ms, key);
            out.serialize_entry(
                key,
                &NodeView {
                    node: &node,
                    proj: sub,
                    base: self.base,
                    is_url: key == "url",
                },
            )?;
        }
        out.end()
    }
}

/// Writes records of one collection with one projection.
pub(crate) struct Renderer<'a> {
    generator: &'a Generator,
    coll: &'a Collection,
    proj: &'a Proj,
    base: &'a str,
    /// The projection resolved once against the synthetic user keys, so that
    /// each record does not match every key against every field name again.
    plan: Vec<(&'static str, &'a Proj)>,
}

impl<'a> Renderer<'a> {
    /// Records of `coll`; synthetic users (no record behind their index)
    /// are computed by `generator`.
    pub fn new(
        generator: &'a Generator,
        coll: &'a Collection,
        proj: &'a Proj,
        base: &'a str,
    ) -> Renderer<'a> {
        // `cultureID` stands for both spellings: lookups ignore case.
        let plan = USER_KEYS
            .iter()
            .filter_map(|k| proj.lookup(k).map(|p| (*k, p)))
            .collect();
        Renderer {
            generator,
            coll,
            proj,
            base,
            plan,
        }
    }

    /// Appends record `meta`, projected, to `out`.
    pub fn write(&self, out: &mut Vec<u8>, meta: &Meta) -> serde_json::Result<()> {
        match self.coll.records.get(meta.fixture as usize) {
            Some(map) => serde_json::to_writer(
                &mut *out,
                &ProjectedMap {
                    map,
                    proj: self.proj,
                    base: self.base,
                },
            ),
            None => serde_json::to_writer(
                &mut *out,
                &SynthUser {
                    generator: self.generator,
                    core: self.generator.core(meta.id),
                    modified_ms: meta.modified_ms,
                    plan: &self.plan,
                    base: self.base,
                },
            ),
        }
    }
}
