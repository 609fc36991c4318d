//! Lucca's field projection syntax (`id,manager[id,name]`, `leavePeriod.ownerId`)
//! parsed into a tree, so the request asks for exactly what the pipeline
//! lists and the transform knows which nested columns to expect.

use std::fmt;

/// One requested field; a leaf when `children` is empty (the whole value, or
/// for a reference object Lucca's default `id`, `name`, `url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNode {
    /// The field name as Lucca spells it, e.g. `manager`.
    pub name: String,
    /// Sub-fields asked for, e.g. `id` and `name` in `manager[id,name]`.
    pub children: Vec<FieldNode>,
}

impl FieldNode {
    /// A field without sub-fields.
    pub fn leaf(name: impl Into<String>) -> Self {
        FieldNode {
            name: name.into(),
            children: Vec::new(),
        }
    }

    /// A field with sub-fields.
    pub fn with_children(name: impl Into<String>, children: Vec<FieldNode>) -> Self {
        FieldNode {
            name: name.into(),
            children,
        }
    }

    /// True when no sub-fields are listed.
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }
}

/// A `fields` item that does not parse, or clashes with an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// 0-based index of the offending item in the list.
    pub item: usize,
    /// What is wrong, quoting the item.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

/// Parses a `fields` list. Each item is one field or a comma-separated list
/// in Lucca syntax: `id`, `manager[id,name]`, `a[b,c[d,e]]`,
/// `leavePeriod.ownerId` (dotted means nested). Items are merged in order of
/// first appearance: `a.b` and `a[c]` give `a[b,c]`; duplicates collapse.
///
/// Returns every bad item, not only the first.
pub fn parse_fields<S: AsRef<str>>(items: &[S]) -> Result<Vec<FieldNode>, Vec<FieldError>> {
    let mut tree = Vec::new();
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item = item.as_ref();
        let result = parse_item(item).and_then(|nodes| {
            nodes
                .into_iter()
                .try_for_each(|node| merge_into(&mut tree, node).map_err(conflict_message))
        });
        if let Err(message) = result {
            errors.push(FieldError {
                item: index,
                message,
            });
        }
    }
    if errors.is_empty() {
        Ok(tree)
    } else {
        Err(errors)
    }
}

/// Renders a tree back to Lucca's compact syntax: `id,manager[id,name]`.
pub fn fields_query(nodes: &[FieldNode]) -> String {
    fn render(nodes: &[FieldNode], out: &mut String) {
        for (i, node) in nodes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&node.name);
            if !node.is_leaf() {
                out.push('[');
                render(&node.children, out);
                out.push(']');
            }
        }
    }
    let mut out = String::new();
    render(nodes, &mut out);
    out
}

/// The dotted path of every leaf of the tree, in order: `manager[id,name]`
/// gives `manager.id`, `manager.name`.
pub fn leaf_paths(nodes: &[FieldNode]) -> Vec<String> {
    fn walk(nodes: &[FieldNode], prefix: &str, out: &mut Vec<String>) {
        for node in nodes {
            let path = if prefix.is_empty() {
                node.name.clone()
            } else {
                format!("{prefix}.{}", node.name)
            };
            if node.is_leaf() {
                out.push(path);
            } else {
                walk(&node.children, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(nodes, "", &mut out);
    out
}

/// True when the dotted path (`id`, `leavePeriod.ownerId`) is asked for by
/// the tree: listed itself, or inside a parent asked for whole.
pub fn contains_path(nodes: &[FieldNode], dotted: &str) -> bool {
    let mut level = nodes;
    for name in dotted.split('.') {
        match level.iter().find(|n| n.name == name) {
            Some(node) if node.is_leaf() => return true,
            Some(node) => level = &node.children,
            None => return false,
        }
    }
    true
}

/// True for `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True for one or more identifiers joined by dots: `id`, `leavePeriod.ownerId`.
pub(crate) fn is_dotted_path(path: &str) -> bool {
    path.split('.').all(is_identifier)
}

fn parse_item(item: &str) -> Result<Vec<FieldNode>, String> {
    let mut parser = ItemParser {
        chars: item.chars().collect(),
        pos: 0,
    };
    parser.skip_ws();
    if parser.peek().is_none() {
        return Err("a `fields` item is empty".to_owned());
    }
    let nodes = parser
        .list()
        .and_then(|nodes| {
            parser.skip_ws();
            match parser.peek() {
                None => Ok(nodes),
                Some(c) => Err(parser.unexpected(c)),
            }
        })
        .map_err(|reason| format!("invalid field `{item}`: {reason}"))?;
    let asks_count = nodes
        .iter()
        .any(|n| n.name == "collection" && n.children.iter().any(|c| c.name == "count"));
    if asks_count {
        return Err(
            "`collection.count` is not a record field: lucca-sync adds it to the request itself"
                .to_owned(),
        );
    }
    Ok(nodes)
}

struct ItemParser {
    chars: Vec<char>,
    pos: usize,
}

impl ItemParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, c: char) -> String {
        format!("unexpected `{c}` at character {}", self.pos + 1)
    }

    /// `entry (',' entry)*`, merged.
    fn list(&mut self) -> Result<Vec<FieldNode>, String> {
        let mut out = Vec::new();
        loop {
            let node = self.entry()?;
            merge_into(&mut out, node).map_err(|path| {
                format!(
                    "`{}` is asked for both whole and with sub-fields",
                    path.join(".")
                )
            })?;
            self.skip_ws();
            if self.peek() == Some(',') {
                self.pos += 1;
            } else {
                return Ok(out);
            }
        }
    }

    /// `name ('.' name)* ('[' list ']')?`
    fn entry(&mut self) -> Result<FieldNode, String> {
        let mut names = vec![self.name()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            names.push(self.name()?);
        }
        self.skip_ws();
        let mut children = Vec::new();
        if self.peek() == Some('[') {
            let open = self.pos;
            self.pos += 1;
            children = self.list()?;
            self.skip_ws();
            match self.peek() {
                Some(']') => self.pos += 1,
                None => return Err(format!("`[` at character {} is never closed", open + 1)),
                Some(c) => return Err(self.unexpected(c)),
            }
        }
        let mut node = FieldNode::with_children(names.pop().unwrap_or_default(), children);
        while let Some(parent) = names.pop() {
            node = FieldNode::with_children(parent, vec![node]);
        }
        Ok(node)
    }

    fn name(&mut self) -> Result<String, String> {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, '[' | ']' | ',' | '.') {
                break;
            }
            self.pos += 1;
        }
        if start == self.pos {
            return Err(match self.peek() {
                None => "a field name is missing at the end".to_owned(),
                Some(c) => format!(
                    "a field name is missing before `{c}` at character {}",
                    self.pos + 1
                ),
            });
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        if is_identifier(&name) {
            Ok(name)
        } else {
            Err(format!(
                "`{name}` is not a valid field name (letters, digits and `_`, not starting with a digit)"
            ))
        }
    }
}

/// Merges `node` into `list`; on a clash between a leaf and a node with
/// sub-fields, returns the clashing path.
fn merge_into(list: &mut Vec<FieldNode>, node: FieldNode) -> Result<(), Vec<String>> {
    let Some(existing) = list.iter_mut().find(|n| n.name == node.name) else {
        list.push(node);
        return Ok(());
    };
    match (existing.is_leaf(), node.is_leaf()) {
        (true, true) => Ok(()),
        (false, false) => {
            for child in node.children {
                merge_into(&mut existing.children, child).map_err(|mut path| {
                    path.insert(0, node.name.clone());
                    path
                })?;
            }
            Ok(())
        }
        _ => Err(vec![node.name]),
    }
}

fn conflict_message(path: Vec<String>) -> String {
    format!(
        "`{}` is asked for both whole and with sub-fields in `fields`",
        path.join(".")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(n: &str) -> FieldNode {
        FieldNode::leaf(n)
    }

    fn node(n: &str, children: Vec<FieldNode>) -> FieldNode {
        FieldNode::with_children(n, children)
    }

    fn query(items: &[&str]) -> String {
        match parse_fields(items) {
            Ok(tree) => fields_query(&tree),
            Err(errors) => panic!("{errors:?}"),
        }
    }

    fn errors(items: &[&str]) -> Vec<(usize, String)> {
        match parse_fields(items) {
            Ok(tree) => panic!("parsed: {tree:?}"),
            Err(errors) => errors.into_iter().map(|e| (e.item, e.message)).collect(),
        }
    }

    #[test]
    fn parses_the_lucca_syntax_into_a_tree() {
        let parsed = parse_fields(&["id", "manager[id,name]", "a[b,c[d,e]]"]);
        assert_eq!(
            parsed,
            Ok(vec![
                leaf("id"),
                node("manager", vec![leaf("id"), leaf("name")]),
                node("a", vec![leaf("b"), node("c", vec![leaf("d"), leaf("e")])]),
            ])
        );
    }

    #[test]
    fn renders_back_compactly() {
        assert_eq!(
            query(&["id", "firstName", "department[id,name]", "manager[id,name]"]),
            "id,firstName,department[id,name],manager[id,name]"
        );
        assert_eq!(query(&[" manager [ id , name ] "]), "manager[id,name]");
        assert_eq!(query(&["id,name,manager[id]"]), "id,name,manager[id]");
        assert_eq!(fields_query(&[]), "");
    }

    #[test]
    fn dotted_paths_nest_and_merge() {
        assert_eq!(query(&["leavePeriod.ownerId"]), "leavePeriod[ownerId]");
        assert_eq!(query(&["a.b", "a[c]"]), "a[b,c]");
        assert_eq!(query(&["a[c]", "a.b.x", "a.b.y", "z"]), "a[c,b[x,y]],z");
        assert_eq!(query(&["a[b.c,b.d]"]), "a[b[c,d]]");
    }

    #[test]
    fn duplicates_collapse() {
        assert_eq!(
            query(&["id", "id", "m[id]", "m[id,name]", "m.name"]),
            "id,m[id,name]"
        );
        assert_eq!(query(&["a[b,b]"]), "a[b]");
    }

    #[test]
    fn contains_paths() {
        let tree = match parse_fields(&["id", "manager", "leavePeriod[ownerId]"]) {
            Ok(tree) => tree,
            Err(e) => panic!("{e:?}"),
        };
        assert!(contains_path(&tree, "id"));
        assert!(contains_path(&tree, "manager.id"));
        assert!(contains_path(&tree, "leavePeriod.ownerId"));
        assert!(contains_path(&tree, "leavePeriod"));
        assert!(!contains_path(&tree, "leavePeriod.date"));
        assert!(!contains_path(&tree, "name"));
    }

    #[test]
    fn exact_error_messages() {
        assert_eq!(
            errors(&["id", "manager[id,name", "", "first-name"]),
            vec![
                (
                    1,
                    "invalid field `manager[id,name`: `[` at character 8 is never closed"
                        .to_owned()
                ),
                (2, "a `fields` item is empty".to_owned()),
                (
                    3,
                    "invalid field `first-name`: `first-name` is not a valid field name \
                     (letters, digits and `_`, not starting with a digit)"
                        .to_owned()
                ),
            ]
        );
        assert_eq!(
            errors(&["a[b,,c]"]),
            vec![(
                0,
                "invalid field `a[b,,c]`: a field name is missing before `,` at character 5"
                    .to_owned()
            )]
        );
        assert_eq!(
            errors(&["a]"]),
            vec![(
                0,
                "invalid field `a]`: unexpected `]` at character 2".to_owned()
            )]
        );
        assert_eq!(
            errors(&["a."]),
            vec![(
                0,
                "invalid field `a.`: a field name is missing at the end".to_owned()
            )]
        );
        assert_eq!(
            errors(&["[id]"]),
            vec![(
                0,
                "invalid field `[id]`: a field name is missing before `[` at character 1"
                    .to_owned()
            )]
        );
        assert_eq!(
            errors(&["1st"]),
            vec![(
                0,
                "invalid field `1st`: `1st` is not a valid field name \
                 (letters, digits and `_`, not starting with a digit)"
                    .to_owned()
            )]
        );
        assert_eq!(
            errors(&["a[b]c"]),
            vec![(
                0,
                "invalid field `a[b]c`: unexpected `c` at character 5".to_owned()
            )]
        );
    }

    #[test]
    fn collection_count_is_refused() {
        let msg =
            "`collection.count` is not a record field: lucca-sync adds it to the request itself";
        assert_eq!(
            errors(&["id", "collection.count"]),
            vec![(1, msg.to_owned())]
        );
        assert_eq!(errors(&["collection[count]"]), vec![(0, msg.to_owned())]);
    }

    #[test]
    fn whole_and_sub_fields_clash() {
        assert_eq!(
            errors(&["manager", "manager[id]"]),
            vec![(
                1,
                "`manager` is asked for both whole and with sub-fields in `fields`".to_owned()
            )]
        );
        assert_eq!(
            errors(&["a[b[c]]", "a.b"]),
            vec![(
                1,
                "`a.b` is asked for both whole and with sub-fields in `fields`".to_owned()
            )]
        );
        assert_eq!(
            errors(&["m[id,id[x]]"]),
            vec![(
                0,
                "invalid field `m[id,id[x]]`: `id` is asked for both whole and with sub-fields"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("_a1"));
        assert!(!is_identifier("1a"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("é"));
        assert!(is_dotted_path("a.b"));
        assert!(!is_dotted_path("a..b"));
        assert!(!is_dotted_path("a."));
    }
}
