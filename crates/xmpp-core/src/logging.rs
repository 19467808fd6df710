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
