//! The on-disk cache of compiled components.
//!
//! An entry is keyed by the component's sha256 and the engine's compatibility
//! hash (wasmtime version, target, settings), so a second start of the same
//! component loads machine code in well under a millisecond instead of
//! compiling it again, and an engine upgrade can never load a stale entry.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// How a component came to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled now (and stored, if the cache is on).
    Fresh(Duration),
    /// Loaded from the cache; no compilation.
    Cached(Duration),
    /// Another loaded function has the same component: its compiled and
    /// linked code is shared, nothing was read or compiled.
    Shared,
}

/// The cache directory, or none to always compile.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

/// `$XDG_CACHE_HOME/brink/compiled` (or the platform's equivalent).
pub fn default_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("brink").join("compiled"))
}

/// Feeds `Hash` output into sha256, giving a stable digest of the engine's
/// compatibility hash (std's `DefaultHasher` makes no stability promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The hex sha256 of `bytes`: a component's content address.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl CompileCache {
    /// A cache in `dir`; `None` disables it.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn entry(&self, engine: &wasmtime::Engine, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Some(dir.join(format!("{digest}-{engine_key}.cwasm")))
    }

    /// The compiled component for `bytes`, from the cache when it holds it.
    ///
    /// A cache that cannot be read or written is logged and bypassed: it only
    /// costs time, never correctness.
    pub fn load(
        &self,
        engine: &wasmtime::Engine,
        digest: &str,
        bytes: &[u8],
    ) -> anyhow::Result<(Component, Compiled)> {
        let entry = self.entry(engine, digest);
        if let Some(path) = entry.as_deref().filter(|p| p.is_file()) {
            let start = Instant::now();
            match load_precompiled(engine, path) {
                Ok(component) => return Ok((component, Compiled::Cached(start.elapsed()))),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}")
                }
            }
        }
        let start = Instant::now();
        let component = Component::new(engine, bytes);
        let elapsed = start.elapsed();
        let component = match (component, entry) {
            (Ok(component), Some(path)) => Ok(stored_and_mapped(engine, component, &path)),
            (component, _) => component,
        };
        // Cranelift's working memory is freed now, failed compile or not.
        crate::heap::release_free_memory();
        Ok((component?, Compiled::Fresh(elapsed)))
    }
}

/// Writes `component` to the cache at `path` and loads it back from there:
/// the machine code is then mapped from the file, as on a warm start, and
/// the heap copy freed (a cold start idled 7 MiB above a warm one). A cache
/// that cannot be written keeps the heap copy.
fn stored_and_mapped(engine: &wasmtime::Engine, component: Component, path: &Path) -> Component {
    if let Err(e) = store(&component, path) {
        tracing::warn!(path = %path.display(), "cannot write the compile cache: {e:#}");
        return component;
    }
    match load_precompiled(engine, path) {
        Ok(mapped) => mapped,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read back the compile cache: {e:#}");
            component
        }
    }
}

#[allow(unsafe_code)]
fn load_precompiled(engine: &wasmtime::Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: only this module writes the cache directory, atomically (temp file
    // + rename), from `Component::serialize` of this engine configuration (the
    // compatibility hash is in the file name, and wasmtime checks it again).
    Ok(unsafe { Component::deserialize_file(engine, path) }?)
}

fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .context("cache entry has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = component.serialize()?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}
