//! What the operator is told about a run: the end-of-run [`summary`] (text or JSON) and the
//! files a run writes ([`output`], [`invalid_rows`]), the live [`progress`] (a bar at a terminal, a log line every
//! 10 s elsewhere), the [`metrics`] and the watched conditions that raise [`alerts`].

pub mod alerts;
pub mod invalid_rows;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod summary;

/// Text msgsend did not write itself (a provider's message id, a source's names and columns),
/// ready for a terminal: control characters are shown escaped (`\u{1b}`), never sent raw, so
/// an answer cannot clear the screen or fake output. `keep_newlines` keeps `\n` as it is.
pub fn printable(text: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| c.is_control() && !(keep_newlines && c == '\n');
    if !text.chars().any(escaped) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if escaped(c) {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(super::printable("sms-1", false), "sms-1");
        assert_eq!(super::printable("a\x1b[2Jb", false), "a\\u{1b}[2Jb");
        assert_eq!(super::printable("line\nnext\r", true), "line\nnext\\r");
        assert_eq!(super::printable("line\nnext", false), "line\\nnext");
    }
}
