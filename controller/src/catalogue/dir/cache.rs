//! The render cache of [`super::DirCatalogue`]: a render is reused while every file it read is byte-for-byte the same.
//!
//! A render reads `recipe.yml`, the compose files and any side file the translator asks for
//! (env files, config and secret files). Each is recorded as an [`Input`]: its path and the
//! SHA-256 of what was read (or that it could not be read). A cached render is returned only
//! after every input has been read again and hashes the same, so an edit — even one that keeps
//! size and mtime — is picked up on the next call, and a file that appears or disappears too.
//! Reading and hashing a few small files costs far less than parsing and translating them.
//!
//! Beyond the renders it keeps, the cache remembers which files each request's latest render
//! read (for up to [`INPUTS_CAPACITY`] requests), so [`RenderCache::inputs_digest`] can tell a
//! render's digest without rendering: each file is read and hashed at most once per freshness
//! ticket, so a resync pass over 10,000 apps of one recipe reads its files once (#14).
//!
//! # Caveats
//! Entries are keyed by the whole request (recipe, version, stack, domain, overrides), so
//! per-run stacks each get one: at most [`CAPACITY`] entries are kept, the least recently
//! used is dropped first. Past [`INPUTS_CAPACITY`] remembered requests, all are forgotten at
//! once (the next render of each records it again).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::super::{RenderRequest, Rendered};
use crate::compose::{Files, Source};
use crate::runtime::Ticket;

/// The most renders kept.
pub(super) const CAPACITY: usize = 256;
/// The most requests whose inputs (paths and hashes, ~100 bytes a file) are remembered.
pub(super) const INPUTS_CAPACITY: usize = 1 << 16;

/// How often the cache answered and how often a render was computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Renders answered from the cache (every input unchanged).
    pub hits: u64,
    /// Renders computed: `recipe.yml` parsed and the compose files translated.
    pub renders: u64,
}

/// One file a render read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Input {
    path: PathBuf,
    /// SHA-256 of the content; `None` when it could not be read.
    digest: Option<[u8; 32]>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Input {
    /// `path` held `bytes`.
    pub(super) fn read(path: &Path, bytes: &[u8]) -> Input {
        Input {
            path: path.to_path_buf(),
            digest: Some(sha256(bytes)),
        }
    }

    /// A compose source as the translator saw it. (Its text is the file read as UTF-8, lossily:
    /// for a file that is not UTF-8 the digests differ and the render is simply computed
    /// again each time — never a stale answer.)
    pub(super) fn source(path: &Path, source: &Source) -> Input {
        Input::read(path, source.text.as_bytes())
    }

    /// Whether the file holds what it held (or is still unreadable).
    fn unchanged(&self) -> bool {
        std::fs::read(&self.path).ok().map(|b| sha256(&b)) == self.digest
    }
}

/// A side-file reader that records what it read.
#[derive(Debug, Default)]
pub(super) struct RecordingFiles {
    seen: RefCell<Vec<Input>>,
}

impl RecordingFiles {
    /// What was read, in order.
    pub(super) fn into_inputs(self) -> Vec<Input> {
        self.seen.into_inner()
    }
}

impl Files for RecordingFiles {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let result = std::fs::read(path);
        self.seen.borrow_mut().push(Input {
            path: path.to_path_buf(),
            digest: result.as_ref().ok().map(|b| sha256(b)),
        });
        result
    }
}

/// SHA-256 (hex) of a request and the files its render read.
pub(super) fn digest(key: &Key, inputs: &[Input]) -> String {
    let mut h = Sha256::new();
    for part in [&key.recipe, &key.version, &key.stack, &key.domain] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (k, v) in &key.env {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    for i in inputs {
        h.update(i.path.to_string_lossy().as_bytes());
        h.update([0]);
        match &i.digest {
            Some(d) => h.update(d),
            None => h.update([0xff]),
        }
    }
    hex::encode(h.finalize())
}

/// What a render was asked for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Key {
    recipe: String,
    version: String,
    stack: String,
    domain: String,
    env: BTreeMap<String, String>,
}

impl Key {
    pub(super) fn of(request: &RenderRequest<'_>) -> Key {
        Key {
            recipe: request.recipe.to_string(),
            version: request.version.to_string(),
            stack: request.stack.to_string(),
            domain: request.domain.to_string(),
            env: request.env.clone(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    inputs: Vec<Input>,
    rendered: Rendered,
    used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<Key, Entry>,
    tick: u64,
    stats: CacheStats,
    /// The files each request's latest render read (every request, not only those in
    /// `entries`).
    inputs: HashMap<Key, Arc<[Input]>>,
    /// Content hashes read for [`RenderCache::inputs_digest`], each with the ticket taken
    /// before it was read.
    hashes: HashMap<PathBuf, (Ticket, Option<[u8; 32]>)>,
}

/// Renders by request, each with the inputs it read.
#[derive(Debug, Default)]
pub(super) struct RenderCache {
    inner: Mutex<Inner>,
}

impl RenderCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every update is one insert
        // or remove), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached render of `key`, if every file it read is unchanged. The files are read
    /// outside the lock.
    pub(super) fn get(&self, key: &Key) -> Option<Rendered> {
        let (inputs, rendered) = {
            let inner = self.lock();
            let entry = inner.entries.get(key)?;
            (entry.inputs.clone(), entry.rendered.clone())
        };
        if !inputs.iter().all(Input::unchanged) {
            return None;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(entry) = inner.entries.get_mut(key) {
            entry.used = tick;
        }
        inner.stats.hits += 1;
        Some(rendered)
    }

    /// The digest a render of `key` would carry now, from the files its latest render read:
    /// each is hashed again unless it was read after `fresh_since`. `None` when `key` was
    /// never rendered (or was forgotten).
    pub(super) fn inputs_digest(&self, key: &Key, fresh_since: Ticket) -> Option<String> {
        let recorded = self.lock().inputs.get(key).cloned()?;
        let mut current = Vec::with_capacity(recorded.len());
        for input in recorded.iter() {
            let known = self
                .lock()
                .hashes
                .get(&input.path)
                .filter(|(read_at, _)| *read_at > fresh_since)
                .map(|(_, digest)| *digest);
            let digest = match known {
                Some(d) => d,
                None => {
                    let read_at = Ticket::next();
                    let d = std::fs::read(&input.path).ok().map(|b| sha256(&b));
                    let mut inner = self.lock();
                    if inner.hashes.len() >= INPUTS_CAPACITY {
                        inner.hashes.clear();
                    }
                    inner.hashes.insert(input.path.clone(), (read_at, d));
                    d
                }
            };
            current.push(Input {
                path: input.path.clone(),
                digest,
            });
        }
        Some(digest(key, &current))
    }

    /// Counts a computed render.
    pub(super) fn computed(&self) {
        self.lock().stats.renders += 1;
    }

    /// Keeps `rendered` for `key` with the files it read; drops the least recently used entry
    /// beyond [`CAPACITY`].
    pub(super) fn put(&self, key: Key, inputs: Vec<Input>, rendered: Rendered) {
        let mut inner = self.lock();
        if inner.inputs.len() >= INPUTS_CAPACITY {
            inner.inputs.clear();
        }
        inner.inputs.insert(key.clone(), inputs.clone().into());
        inner.tick += 1;
        let used = inner.tick;
        inner.entries.insert(
            key,
            Entry {
                inputs,
                rendered,
                used,
            },
        );
        while inner.entries.len() > CAPACITY {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    inner.entries.remove(&k);
                }
                None => break,
            }
        }
    }

    /// Hits and computed renders so far.
    pub(super) fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    /// How many renders are kept.
    pub(super) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}
