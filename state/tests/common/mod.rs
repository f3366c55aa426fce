//! Test resource types and engine backends shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use crd::{Kind, ObjectMeta, Resource};
use serde::{Deserialize, Serialize};
use state::{Config, Engine, MemoryEngine, SledEngine, Store};

/// A WarmApp-kinded test resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub metadata: ObjectMeta,
    pub spec: AppSpec,
    #[serde(default)]
    pub status: AppStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub phase: String,
}

impl App {
    pub fn new(name: &str, version: &str) -> App {
        App {
            metadata: ObjectMeta::named(name),
            spec: AppSpec {
                version: version.into(),
            },
            status: AppStatus::default(),
        }
    }
}

impl Resource for App {
    const KIND: Kind = Kind::WarmApp;
    type Spec = AppSpec;
    type Status = AppStatus;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &AppSpec {
        &self.spec
    }
    fn status(&self) -> &AppStatus {
        &self.status
    }
    fn status_mut(&mut self) -> &mut AppStatus {
        &mut self.status
    }
}

/// A Run-kinded test resource (a counter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub metadata: ObjectMeta,
    pub spec: JobSpec,
    #[serde(default)]
    pub status: JobStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub n: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub done: bool,
}

impl Job {
    pub fn new(name: &str, n: u64) -> Job {
        Job {
            metadata: ObjectMeta::named(name),
            spec: JobSpec { n },
            status: JobStatus::default(),
        }
    }
}

impl Resource for Job {
    const KIND: Kind = Kind::Run;
    type Spec = JobSpec;
    type Status = JobStatus;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &JobSpec {
        &self.spec
    }
    fn status(&self) -> &JobStatus {
        &self.status
    }
    fn status_mut(&mut self) -> &mut JobStatus {
        &mut self.status
    }
}

/// Where a conformance case's data lives. `engine()` called again after the previous store
/// was dropped is a "reopen" of the same data.
pub trait Backend: Send + Sync + 'static {
    fn engine(&self) -> Arc<dyn Engine>;
    /// Whether data survives the process (sled) or only the store (memory).
    fn durable(&self) -> bool;
}

pub struct MemoryBackend(MemoryEngine);

impl MemoryBackend {
    pub fn new() -> Self {
        MemoryBackend(MemoryEngine::new())
    }
}

impl Backend for MemoryBackend {
    fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(self.0.clone())
    }
    fn durable(&self) -> bool {
        false
    }
}

pub struct SledBackend(tempfile::TempDir);

impl SledBackend {
    pub fn new() -> Self {
        SledBackend(tempfile::tempdir().expect("tempdir"))
    }
}

impl Backend for SledBackend {
    fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(SledEngine::open(self.0.path().join("data")).expect("open sled engine"))
    }
    fn durable(&self) -> bool {
        true
    }
}

pub async fn open(backend: &dyn Backend, config: Config) -> Store {
    Store::with_engine(backend.engine(), config)
        .await
        .expect("open store")
}
