//! Pull progress: one bar per blob on a terminal, plain lines otherwise,
//! nothing with `--quiet`. Everything goes to stderr; stdout carries results.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::registry::{NoProgress, Progress};

pub fn for_terminal(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(Lines::default())
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split(':').nth(1).unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for Bars {
    fn default() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for Bars {
    fn start(&self, digest: &str, total: u64, already: u64) {
        let Ok(mut bars) = self.bars.lock() else { return };
        let bar = bars
            .entry(digest.to_string())
            .or_insert_with(|| self.multi.add(ProgressBar::new(total)));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(short(digest).to_string());
        bar.set_length(total);
        bar.set_position(already);
    }
    fn advance(&self, digest: &str, bytes: u64) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(digest).cloned()) {
            bar.inc(bytes);
        }
    }
    fn finish(&self, digest: &str, downloaded: bool) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(digest).cloned()) {
            bar.finish_with_message(if downloaded { "done" } else { "present" });
        }
    }
}

/// For logs and pipes: a line when a blob starts, every 5 s while it runs, and when it ends.
#[derive(Default)]
struct Lines {
    state: Mutex<HashMap<String, (u64, u64, Instant)>>,
}

#[allow(clippy::print_stderr)]
fn line(msg: String) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

impl Progress for Lines {
    fn start(&self, digest: &str, total: u64, already: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.insert(digest.to_string(), (already, total, Instant::now()));
        }
        let resumed = if already > 0 {
            format!(" (resuming at {})", human_size(already))
        } else {
            String::new()
        };
        line(format!("{}: downloading {}{resumed}", short(digest), human_size(total)));
    }
    fn advance(&self, digest: &str, bytes: u64) {
        let Ok(mut s) = self.state.lock() else { return };
        if let Some((done, total, last)) = s.get_mut(digest) {
            *done += bytes;
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                line(format!(
                    "{}: {} of {}",
                    short(digest),
                    human_size(*done),
                    human_size(*total)
                ));
            }
        }
    }
    fn finish(&self, digest: &str, downloaded: bool) {
        line(format!(
            "{}: {}",
            short(digest),
            if downloaded { "done" } else { "already present" }
        ));
    }
}

/// `1.2 GB`, `15.3 MB`, `812 kB`, `97 B` (decimal units, as registries show).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
