//! Fuzz targets of the compose parser and translator: mutated corpus files and arbitrary bytes never panic, never hang, and every error has a position.
//!
//! Short in the normal suite (256 cases each); long with `scripts/fuzz.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::tests::{corpus_dir, corpus_env};
use super::*;
use crate::fuzzing::{bounded, cases, garbage, mutate, mutation, Outcome};

/// Every side file reads as the same small content (the corpus ships none).
struct AnyFiles;

impl Files for AnyFiles {
    fn read(&self, _path: &Path) -> std::io::Result<Vec<u8>> {
        Ok(b"FROM_FILE=1\n".to_vec())
    }
}

/// The corpus files, `(name, text)`, sorted.
fn corpus() -> Vec<(String, String)> {
    let dir = corpus_dir();
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("the corpus directory ../shared/compose-corpus must exist")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).expect("corpus file readable");
            (n, text)
        })
        .collect();
    files.sort();
    files
}

/// Where an error says it is, or why it cannot say.
fn position(e: &Error) -> Result<&Position, &'static str> {
    match e {
        Error::FilesMissing => Err("no file given"),
        Error::StackNameRejected(..) => Err("the stack name is not in a file"),
        Error::FileUnreadable { at, .. }
        | Error::YamlRejected { at, .. }
        | Error::FieldUnknown { at }
        | Error::TypeMismatched { at, .. }
        | Error::ValueRejected { at, .. }
        | Error::InterpolationFailed { at, .. }
        | Error::VersionRejected { at, .. }
        | Error::ReferenceUndefined { at, .. }
        | Error::PropertyForbidden { at, .. } => Ok(at),
    }
}

/// Translates `text` as file `name` under the case deadline; fails the case on a panic, a
/// hang, or an error without file:line:col.
fn check(name: &str, text: String, vars: Vec<(&'static str, &'static str)>) -> Result<(), String> {
    let file = name.to_string();
    let outcome = bounded(move || {
        let env: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sources = [Source { name: file, text }];
        translate(
            &sources,
            &Options {
                stack: "fz",
                env: &env,
                working_dir: PathBuf::from("/w"),
                files: &AnyFiles,
            },
        )
        .map(|_| ())
    });
    match outcome {
        Outcome::Returned(Ok(())) => Ok(()),
        Outcome::Returned(Err(e)) => {
            let at = position(&e).map_err(|why| format!("{e}: unexpected error class ({why})"))?;
            if at.file != name || at.line == 0 || at.column == 0 {
                return Err(format!("error without file:line:col: {e} ({at:?})"));
            }
            Ok(())
        }
        Outcome::Panicked => Err("translation panicked".into()),
        Outcome::Hung => Err("translation did not return within the case deadline".into()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_files_never_panic_or_hang_and_errors_carry_a_position(
        pick in any::<proptest::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let files = corpus();
        let (name, text) = &files[pick.index(files.len())];
        let mutated = mutate(text, &mutations);
        if let Err(why) = check(name, mutated.clone(), corpus_env(&name[..2])) {
            return Err(TestCaseError::fail(format!("{why}\n--- input ---\n{mutated}")));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_hang_and_errors_carry_a_position(text in garbage()) {
        if let Err(why) = check("g.yml", text.clone(), vec![]) {
            return Err(TestCaseError::fail(format!("{why}\n--- input ---\n{text:?}")));
        }
    }
}

#[test]
fn every_unmutated_corpus_file_passes_the_fuzz_check() {
    // The harness itself: real files go through `check` (some are rejected, with positions).
    for (name, text) in corpus() {
        check(&name, text, corpus_env(&name[..2])).expect("corpus file passes the check");
    }
}
