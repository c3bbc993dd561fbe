//! `brink.toml`: any text is a manifest or an error that names the file
//! (and, for a syntax error, a line and column inside the text); never a
//! panic. An accepted manifest yields every function's spec and every
//! section's settings.
#![no_main]

use std::path::Path;

use brink_host::manifest::{Manifest, ManifestError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match Manifest::parse(text, "brink.toml") {
        Ok(manifest) => {
            for (name, function) in &manifest.function {
                let _ = function.spec(name);
            }
            let base = Path::new("/fuzz");
            let _ = manifest.kv.config();
            let _ = manifest.nn.config(base);
            for model in manifest.model.values() {
                let _ = model.config(base);
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
