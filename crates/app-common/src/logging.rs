//! Logging set-up shared by the programs: `tracing` to standard error, filtered by
//! `RUST_LOG` or by the number of `-v` flags.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Without `RUST_LOG`, `verbose` picks the level: 0 gives
/// `quiet` (the program's default), 1 `debug`, 2 or more `trace`. refinery's start-up
/// chatter is kept at `warn` below `trace`.
pub fn init(verbose: u8, quiet: &str) {
    let default = match verbose {
        0 => format!("{quiet},refinery_core=warn"),
        1 => "debug,refinery_core=warn".to_owned(),
        _ => "trace".to_owned(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second call (as in tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// An error and its causes on one line (`a: b: c`), leaving out causes whose text the
/// message already contains (many errors repeat their source in their own message).
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Plain(#[source] std::io::Error);

    #[test]
    fn causes_are_listed_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(one_line(&Repeats(io())), "outer: disk on fire");
        assert_eq!(one_line(&Plain(io())), "outer: disk on fire");
    }
}
