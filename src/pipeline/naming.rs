//! Column names analysts can type: Lucca's camelCase paths become
//! snake_case (or stay as spelled, with `naming: original`), nested paths
//! are joined with `_`.

use super::{Naming, StreamSpec};

/// `dtContractStart` -> `dt_contract_start`, `cultureID` -> `culture_id`,
/// `e_bloodType` -> `e_blood_type`, `Id` -> `id`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let starts_word = match prev {
                None => false,
                Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                // The last capital of an acronym starts a word: `HTTPServer`.
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                Some(_) => false,
            };
            if starts_word {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else if c.is_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    out
}

/// The column of a (possibly dotted) field path: `manager.id` ->
/// `manager_id`, `dtContractStart` -> `dt_contract_start`.
pub fn column_name(path: &str) -> String {
    column_name_in(path, Naming::SnakeCase)
}

/// The column of a field path under a stream's `naming`.
pub fn column_name_in(path: &str, naming: Naming) -> String {
    path.split('.')
        .map(|segment| naming.segment(segment))
        .collect::<Vec<_>>()
        .join("_")
}

/// The column a stream stores field `path` in: the key of a `columns:`
/// entry whose `path` is this field, else the name `naming` gives it.
pub fn stream_column(stream: &StreamSpec, path: &str) -> String {
    stream
        .columns
        .iter()
        .find(|(_, spec)| {
            spec.path
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(path))
        })
        .map_or_else(
            || column_name_in(path, stream.naming),
            |(name, _)| name.clone(),
        )
}

impl Naming {
    /// One segment of a path (`dtContractStart`) as a column-name part.
    pub fn segment(self, key: &str) -> String {
        match self {
            Naming::SnakeCase => snake_case(key),
            Naming::Original => key
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{column_name, snake_case};

    #[test]
    fn nested_paths_join_with_underscores() {
        assert_eq!(column_name("manager.id"), "manager_id");
        assert_eq!(column_name("department.parentId"), "department_parent_id");
    }

    #[test]
    fn lucca_names() {
        for (from, to) in [
            ("id", "id"),
            ("Id", "id"),
            ("firstName", "first_name"),
            ("dtContractStart", "dt_contract_start"),
            ("cultureID", "culture_id"),
            ("cultureId", "culture_id"),
            ("legalEntityId", "legal_entity_id"),
            ("e_bloodType", "e_blood_type"),
            ("HTTPServer", "http_server"),
            ("address2Line", "address2_line"),
        ] {
            assert_eq!(snake_case(from), to, "{from}");
        }
    }
}
