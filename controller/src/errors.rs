//! Errors as people read them: one line with every cause, for logs, history, API answers and the CLI.

/// Formats an error with its chain of causes: `a: b: c`.
///
/// A cause whose text the message already ends with (`#[error(transparent)]`, or a message
/// that embeds its source) is printed once.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `#[error(transparent)]` repeats the source's text; print it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
