//! User-visible output of the fetch step: progress bars on a terminal, one plain line per step
//! otherwise, or only `tracing` events.

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How the fetcher reports what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Progress bars on stderr (plus one line per step).
    On,
    /// One plain line per step on stderr, no bars (logs, CI).
    Off,
    /// Nothing on stderr; steps are emitted as `tracing` events (for embedding in the app).
    Silent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Plain,
    Silent,
}

/// Prints step lines and creates bars according to the [`Progress`] setting.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    mode: Mode,
    prefix: String,
}

impl Reporter {
    pub(crate) fn new(progress: Progress, model_id: &str) -> Self {
        let mode = match progress {
            Progress::Auto if std::io::stderr().is_terminal() => Mode::Bars,
            Progress::Auto | Progress::Off => Mode::Plain,
            Progress::On => Mode::Bars,
            Progress::Silent => Mode::Silent,
        };
        Reporter {
            mode,
            prefix: format!("[{model_id}]"),
        }
    }

    /// Whether periodic plain progress lines should be printed for long steps.
    pub(crate) fn plain(&self) -> bool {
        self.mode == Mode::Plain
    }

    /// One step line.
    pub(crate) fn info(&self, msg: impl Display) {
        match self.mode {
            Mode::Bars | Mode::Plain => eprintln!("{} {msg}", self.prefix),
            Mode::Silent => tracing::info!("{} {msg}", self.prefix),
        }
    }

    /// A warning line (corrupt cache file, unusable local wheel, ...).
    pub(crate) fn warn(&self, msg: impl Display) {
        match self.mode {
            Mode::Bars | Mode::Plain => eprintln!("warning: {} {msg}", self.prefix),
            Mode::Silent => tracing::warn!("{} {msg}", self.prefix),
        }
    }

    /// A byte progress bar (hidden unless bars are on). `len == None` gives a spinner.
    pub(crate) fn bytes_bar(&self, len: Option<u64>, msg: impl Into<String>) -> ProgressBar {
        if self.mode != Mode::Bars {
            return ProgressBar::hidden();
        }
        let template = if len.is_some() {
            "{prefix} {msg:30!} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} \
             {elapsed}/{eta}"
        } else {
            "{prefix} {spinner} {msg:30!} {bytes} {elapsed}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        // Configure while hidden so the first frame already has its message.
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden())
            .with_style(style)
            .with_prefix(self.prefix.clone())
            .with_message(msg.into());
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}
