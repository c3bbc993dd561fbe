//! Where the CLI's log records go: stderr, as text for people or as one
//! JSON object per line for log shippers (`--log-format json`).

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber: records passing `filter` (`--log`) in `format`.
pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let targets = filter
        .parse::<tracing_subscriber::filter::Targets>()
        .map_err(|error| {
            format!(
                "--log (or BRINK_LOG) {filter:?} is not a log filter: {error}; \
                 give a level and targets such as `info` or `info,brink_host=debug`"
            )
        })?;
    // wasm-compose narrates every import it resolves at info and warns of
    // each one it leaves an import, which is what `brink build` wants of it.
    let targets = if filter.contains("wasm_compose") {
        targets
    } else {
        targets.with_target("wasm_compose", tracing::level_filters::LevelFilter::ERROR)
    };
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(false)
    });
    tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(targets)
        .init();
    Ok(())
}
