//! The `hearth` binary: parses the command line, installs logging, runs the command.

use std::process::ExitCode;

use clap::Parser;
use controller::cli::{self, Cli, LogFormat};
use controller::runtime::logging;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` narrates its startup at info: the global default (`warn`) is raised for it.
    let filter = match (&cli.command, cli.log.as_str()) {
        (cli::Command::Serve(_), "warn") => "info",
        (_, f) => f,
    };
    if let Err(e) = init_logging(cli.log_format, filter) {
        eprintln!("hearth: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hearth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        cli::run(cli, &mut out, &mut err).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth: {}", cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries command output); `RUST_LOG` overrides `--log`. Whatever
/// the filter, debug and trace events of crates that log request bodies (bollard: secrets'
/// data, services' environment) are never written ([`logging::may_log`]).
fn init_logging(format: LogFormat, default_filter: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s),
        _ => EnvFilter::try_new(default_filter),
    }
    .map_err(|e| format!("invalid log filter: {e}"))?;
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::filter::filter_fn(logging::may_log));
    let installed = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
