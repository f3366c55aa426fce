//! Fuzz targets of the state-file loader: mutated example files and arbitrary bytes never panic, never hang, and every problem has a position.
//!
//! Short in the normal suite (256 cases each); long with `scripts/fuzz.sh`.

use proptest::prelude::*;

use super::*;
use crate::fuzzing::{bounded, cases, garbage, mutate, mutation, Outcome};

/// The example state file: every operator kind, health checks, env, durations.
const EXAMPLE: &str = include_str!("../../../deploy/examples/state.yml");

/// More fields than the example uses: a dedicated provider, a TCP check, versions, limits.
const MORE: &str = "apiVersion: hearth/v1
kind: WarmApp
metadata:
  name: api
  labels:
    team: core
spec:
  recipe: webapp
  version: 2.0.0
  health:
    http:
      service: app
      port: 8080
      path: /healthz
    readyTimeout: 90s
  promote: manual
  env:
    A: \"1\"
---
apiVersion: hearth/v1
kind: DepProvider
metadata:
  name: db
spec:
  mode: perRun
  recipe: webapp
  version: 1.0.0
---
apiVersion: hearth/v1
kind: SlotPool
metadata:
  name: big
spec:
  slots: 12
  portBase: 30000
  portsPerSlot: 5
  waitTimeout: 1h
";

/// Parses `text` under the case deadline; fails the case on a panic, a hang, or a problem
/// without line and column.
fn check(text: String) -> Result<(), String> {
    let base = BaseDomain::parse("hearth.test").map_err(|e| e.to_string())?;
    let outcome = bounded(move || parse("s.yml", &text, Some(&base)).map(|_| ()));
    match outcome {
        Outcome::Returned(Ok(())) => Ok(()),
        Outcome::Returned(Err(Error::FileRejected { file, problems })) => {
            if file != "s.yml" || problems.is_empty() {
                return Err(format!(
                    "rejection without problems or file: {file} {problems:?}"
                ));
            }
            match problems.iter().find(|p| p.line == 0 || p.column == 0) {
                Some(p) => Err(format!("problem without line:col: {}", p.display_in(&file))),
                None => Ok(()),
            }
        }
        Outcome::Returned(Err(e)) => Err(format!("parse returned an unexpected error: {e}")),
        Outcome::Panicked => Err("parsing panicked".into()),
        Outcome::Hung => Err("parsing did not return within the case deadline".into()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_state_files_never_panic_or_hang_and_problems_carry_a_position(
        more in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let mutated = mutate(if more { MORE } else { EXAMPLE }, &mutations);
        if let Err(why) = check(mutated.clone()) {
            return Err(TestCaseError::fail(format!("{why}\n--- input ---\n{mutated}")));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_hang_and_problems_carry_a_position(text in garbage()) {
        if let Err(why) = check(text.clone()) {
            return Err(TestCaseError::fail(format!("{why}\n--- input ---\n{text:?}")));
        }
    }
}

#[test]
fn the_unmutated_fuzz_seeds_load() {
    // The seeds must be valid, or the mutations would only ever explore rejections.
    check(EXAMPLE.to_string()).expect("example passes the check");
    let base = BaseDomain::parse("hearth.test").expect("base domain");
    parse("s.yml", EXAMPLE, Some(&base)).expect("example loads");
    parse("s.yml", MORE, Some(&base)).expect("second seed loads");
}
