//! Helpers every module's errors share: the "outer: inner: root" chain of
//! a status message, the root cause of a library error, and cutting text
//! that an error quotes at a character boundary.

/// "outer: inner: root", skipping a source whose text the outer message
/// already ends with.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The innermost source's message (what a library error was caused by).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes, with `marker` appended when it was cut.
pub fn truncate(s: &str, max: usize, marker: &str) -> String {
    let cut = prefix(s, max);
    if cut.len() == s.len() {
        return s.to_owned();
    }
    format!("{cut}{marker}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn chain_joins_sources_and_root_cause_is_the_innermost() {
        assert_eq!(chain(&Outer(Inner)), "outer: inner");
        assert_eq!(root_cause(&Outer(Inner)), "inner");
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(truncate("abc", 3, "…"), "abc");
        assert_eq!(truncate("abcd", 3, "…"), "abc…");
        assert_eq!(truncate("ééé", 5, "+"), "éé+");
    }
}
