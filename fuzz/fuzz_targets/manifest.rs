//! `brink.toml`: any text is a manifest or an error that names the file
//! (and, for a syntax error, a line and column inside the text); never a
//! panic. An accepted manifest yields every function's spec and every
//! section's settings.
#![no_main]

use std::path::Path;

use brink_host::manifest::{Manifest, ManifestError};
use brink_host::plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match Manifest::parse(text, "brink.toml") {
        Ok(manifest) => {
            // Every spec plans with no scope: grants that need a backend
            // are refused by name, never a panic.
            for (name, function) in &manifest.function {
                let _ = plan::spec(name, plan::Body::from(function), &plan::Scope::default());
            }
            let base = Path::new("/fuzz");
            let _ = plan::kv_config(&manifest.kv);
            let _ = plan::nn_config(&manifest.nn, base);
            for model in manifest.model.values() {
                let _ = plan::model_config(model, base);
            }
            for uplink in manifest.uplink.values() {
                let _ = plan::queue_config(uplink);
            }
            if let Some(registry) = &manifest.registry {
                let _ = registry.policy();
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with("brink.toml"),
                "unnamed error: {message}"
            );
            let lines = text.split('\n').count();
            match e {
                ManifestError::Parse { line, column, .. } => {
                    assert!(
                        line >= 1 && line <= lines,
                        "line {line} of {lines}: {message}"
                    );
                    assert!(column >= 1, "column {column}: {message}");
                }
                ManifestError::Invalid {
                    at: Some((line, _)),
                    ..
                } => {
                    assert!(
                        line >= 1 && line <= lines,
                        "line {line} of {lines}: {message}"
                    );
                }
                _ => {}
            }
        }
    }
});
