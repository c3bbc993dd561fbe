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

/// The cache directory (or none to always compile), and the settings to
/// compile with.
#[derive(Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    compiler: wasmtime::Config,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
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
    /// A cache in `dir` (`None` disables it) of code compiled with
    /// `compiler`: the engine's settings that shape the code (features,
    /// deadlines), without its instance allocator.
    pub fn new(dir: Option<PathBuf>, compiler: wasmtime::Config) -> Self {
        Self { dir, compiler }
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
        let compiled = self.compile(bytes);
        let elapsed = start.elapsed();
        // The compiler's engine is gone with its cranelift contexts; what
        // they held goes back to the OS now.
        crate::heap::release_free_memory();
        let compiled = compiled?;
        let component = match entry {
            Some(path) => stored_and_mapped(engine, &compiled, &path)?,
            None => from_bytes(engine, &compiled)?,
        };
        Ok((component, Compiled::Fresh(elapsed)))
    }

    /// Compiles `bytes` in an engine of its own. wasmtime keeps cranelift's
    /// working contexts for the engine's lifetime (about 6 MiB of heap after
    /// the demo's cold start); this engine, and they, end with the compile, so a
    /// cold start idles near a warm one. It costs an engine's setup per
    /// compile (the demo's cold start: 365–424 ms against 356–374 ms).
    fn compile(&self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(wasmtime::Engine::new(&self.compiler)?.precompile_component(bytes)?)
    }
}

/// Writes `compiled` to the cache at `path` and loads it from there: the
/// machine code is then mapped from the file, as on a warm start, with no
/// copy on the heap. A cache that cannot be written costs the heap copy.
fn stored_and_mapped(
    engine: &wasmtime::Engine,
    compiled: &[u8],
    path: &Path,
) -> anyhow::Result<Component> {
    if let Err(e) = store(compiled, path) {
        tracing::warn!(path = %path.display(), "cannot write the compile cache: {e:#}");
        return from_bytes(engine, compiled);
    }
    match load_precompiled(engine, path) {
        Ok(mapped) => Ok(mapped),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read back the compile cache: {e:#}");
            from_bytes(engine, compiled)
        }
    }
}

#[allow(unsafe_code)]
fn from_bytes(engine: &wasmtime::Engine, compiled: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: `compiled` is what `precompile_component` just produced, with
    // this engine's code settings (wasmtime checks them again).
    Ok(unsafe { Component::deserialize(engine, compiled) }?)
}

#[allow(unsafe_code)]
fn load_precompiled(engine: &wasmtime::Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: only this module writes the cache directory, atomically (temp file
    // + rename), from `Component::serialize` of this engine configuration (the
    // compatibility hash is in the file name, and wasmtime checks it again).
    Ok(unsafe { Component::deserialize_file(engine, path) }?)
}

fn store(compiled: &[u8], path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .context("cache entry has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, compiled).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}
