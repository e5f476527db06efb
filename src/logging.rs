//! The only place a tracing subscriber is installed.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs go to stderr so stdout stays for results scripts read.
/// `level` is the `--log-level` flag; `KBOOT_LOG` (an EnvFilter directive) wins when set.
pub fn init(level: &str) {
    let filter = std::env::var("KBOOT_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files or pipes scripts read.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
