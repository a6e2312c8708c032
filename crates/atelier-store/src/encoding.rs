//! How both backends write values that SQL has no common type for, so that a
//! `db copy` moves them unchanged: lists as comma-joined text (scopes, media ids),
//! and "contains" searches as `LIKE … ESCAPE '\'` patterns.

use std::fmt::Display;

/// `a,b,c`; an empty list is the empty string.
pub fn join_list<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The items of a [`join_list`] text.
pub fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').filter(|s| !s.is_empty())
}

/// A `LIKE … ESCAPE '\'` pattern matching any text that contains `needle`
/// literally (`%`, `_` and `\` in it are escaped).
pub fn contains_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 4);
    out.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_patterns() {
        assert_eq!(join_list(&["chat", "images"]), "chat,images");
        assert_eq!(join_list::<&str>(&[]), "");
        assert_eq!(split_list("chat,images").collect::<Vec<_>>(), ["chat", "images"]);
        assert_eq!(split_list("").count(), 0);
        assert_eq!(contains_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }
}
