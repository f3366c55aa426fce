//! The `hearth` binary: parses the command line, installs logging, runs the command.

use std::process::ExitCode;

use clap::Parser;
use controller::cli::{self, Cli, LogFormat};
use controller::runtime::logging;

/// mimalloc, not glibc malloc: a resync frees and allocates ~50,000 listed objects per pass
/// (BENCHMARKS.md, issue 14, fifth pass).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            eprintln!("hearth: {}", controller::errors::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries command output); `RUST_LOG` overrides `--log`. Installed
/// by [`logging::init`], which also keeps bodies of Docker requests out of the log.
fn init_logging(format: LogFormat, default_filter: &str) -> Result<(), String> {
    let format = match format {
        LogFormat::Text => logging::LogFormat::Human,
        LogFormat::Json => logging::LogFormat::Json,
    };
    logging::init(format, default_filter).map_err(|e| e.to_string())
}
