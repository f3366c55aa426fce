//! Log output for the daemon: human-readable lines by default, one JSON object per line on request.

use std::str::FromStr;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::Error;

/// Crates whose debug and trace events print request or response bodies. bollard logs every
/// Engine API request body at debug — a secret's data (base64), a service's environment — and
/// every response, so `RUST_LOG=debug` would write secrets to the log (found by the security
/// test, `tests/tests/security_real.rs`). Their events below info are never written, whatever
/// the filter says; their info, warn and error events are.
pub const BODY_LOGGING_TARGETS: &[&str] = &["bollard"];

/// Whether an event or span with `metadata` may be written at all: false for debug and trace of
/// [`BODY_LOGGING_TARGETS`] (and their modules). Installed as a global filter next to the
/// user's filter by [`init`], which the `hearth` binary calls.
pub fn may_log(metadata: &tracing::Metadata<'_>) -> bool {
    if *metadata.level() <= tracing::Level::INFO {
        return true;
    }
    let target = metadata.target();
    !BODY_LOGGING_TARGETS.iter().any(|t| {
        target == *t
            || target
                .strip_prefix(t)
                .is_some_and(|rest| rest.starts_with("::"))
    })
}

/// How logs are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event, spans (e.g. `reconcile{object=WarmApp/web}`) as prefixes.
    #[default]
    Human,
    /// One JSON object per event, with the current span.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected human or json)"
            )),
        }
    }
}

/// Installs the global subscriber writing to stderr. The filter comes from `RUST_LOG` when set,
/// else `default_filter` (e.g. `info`).
///
/// # Errors
/// [`Error::LoggingInitFailed`] when the filter does not parse or a global subscriber is
/// already installed.
pub fn init(format: LogFormat, default_filter: &str) -> Result<(), Error> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s),
        _ => EnvFilter::try_new(default_filter),
    }
    .map_err(|e| Error::LoggingInitFailed(format!("invalid log filter: {e}")))?;
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::filter::filter_fn(may_log));
    let result = match format {
        LogFormat::Human => registry
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
    result.map_err(|e| Error::LoggingInitFailed(format!("cannot install the log subscriber: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an event of `target` at `level` passes [`may_log`].
    fn written(target: &'static str, level: tracing::Level) -> bool {
        let meta = tracing::Metadata::new(
            "e",
            target,
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        );
        may_log(&meta)
    }

    struct Callsite;
    static CALLSITE: Callsite = Callsite;
    impl tracing::callsite::Callsite for Callsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("never registered")
        }
    }

    #[test]
    fn bodies_of_docker_requests_are_never_logged_but_docker_warnings_are() {
        use tracing::Level;
        assert!(!written("bollard", Level::DEBUG));
        assert!(!written("bollard::docker", Level::DEBUG));
        assert!(!written("bollard::docker", Level::TRACE));
        assert!(written("bollard::docker", Level::INFO));
        assert!(written("bollard::docker", Level::WARN));
        assert!(written("controller::http", Level::DEBUG));
        assert!(written("bollardish", Level::DEBUG));
    }

    #[test]
    fn log_formats_should_parse_by_name() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>(), Ok(LogFormat::Human));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
