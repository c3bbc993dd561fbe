//! Compiled code shared by every function with the same component: one
//! `Component` and one linked `InstancePre` per digest, however many
//! functions (or tenants) deploy it. A thousand deployments of one sensor
//! filter cost its code once; what each adds is its own spec, config and
//! warm-instance list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use wasmtime::component::Component;

use super::entry::EntryPre;
use super::flavour::{Flavour, Runtime};
use crate::error::LoadError;

/// One component, compiled and linked.
pub(super) struct Code {
    pub(super) pre: EntryPre,
    /// Its imports, checked against each function's grants.
    pub(super) imports: Vec<String>,
    /// The engine it was compiled for, and which one that is.
    pub(super) engine: wasmtime::Engine,
    pub(super) flavour: Flavour,
}

impl Code {
    /// Links `component`, compiled on `runtime`, as `function`.
    pub(super) fn link(
        runtime: &Runtime,
        function: &str,
        component: Component,
    ) -> Result<Self, LoadError> {
        let imports = component
            .component_type()
            .imports(&runtime.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                function: function.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let pre = EntryPre::new(&component, pre).map_err(|e| LoadError::MissingExport {
            function: function.to_owned(),
            reason: format!("{e:#}"),
        })?;
        Ok(Self {
            pre,
            imports,
            engine: runtime.engine.clone(),
            flavour: runtime.flavour,
        })
    }
}

/// The live code by component digest. Entries are weak: the code goes when
/// the last function that uses it does.
#[derive(Default, Clone)]
pub(super) struct CodeTable {
    by_digest: Arc<Mutex<HashMap<String, Weak<Code>>>>,
}

impl CodeTable {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Code>>> {
        self.by_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The code of a function already loaded with this component.
    pub(super) fn get(&self, digest: &str) -> Option<Arc<Code>> {
        self.entries().get(digest)?.upgrade()
    }

    /// Keeps `code` for the next load of `digest`; when another load got
    /// there first, its code is returned and `code` dropped.
    pub(super) fn insert(&self, digest: &str, code: Code) -> Arc<Code> {
        let mut entries = self.entries();
        if let Some(live) = entries.get(digest).and_then(Weak::upgrade) {
            return live;
        }
        // Forget the dead entries now and then, so the table follows the
        // live set rather than every digest ever loaded.
        if entries.len() >= 64 && entries.len().is_power_of_two() {
            entries.retain(|_, code| code.strong_count() > 0);
        }
        let code = Arc::new(code);
        entries.insert(digest.to_owned(), Arc::downgrade(&code));
        code
    }
}
