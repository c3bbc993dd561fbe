//! The registry's inputs: version specs, semver ranges, names, digests, and
//! an upload's header check. Properties: a parsed version prints to text
//! that parses to the same version; a bare version as a requirement
//! matches exactly that version; an accepted name or digest has the
//! documented shape; the header check never panics and accepts only a
//! WebAssembly component's preamble.
//!
//! The input is four lines (version, requirement, name, digest) and then
//! the upload's bytes.
#![no_main]

use brink_fuzz::lines;
use libfuzzer_sys::fuzz_target;

struct Input<'a> {
    version: &'a str,
    requirement: &'a str,
    name: &'a str,
    digest: &'a str,
    upload: &'a [u8],
}

fuzz_target!(|data: &[u8]| {
    let Some((l, upload)) = lines(data, 4) else {
        return;
    };
    let input = Input {
        version: l[0],
        requirement: l[1],
        name: l[2],
        digest: l[3],
        upload,
    };
    if let Ok(version) = brink_registry::parse_version(input.version) {
        let text = version.to_string();
        match brink_registry::parse_version(&text) {
            Ok(again) => assert_eq!(again, version),
            Err(e) => panic!("{text:?} does not parse again: {e}"),
        }
        match brink_registry::parse_requirement(&text) {
            Ok(req) => assert!(req.matches(&version), "{text:?} does not match itself"),
            Err(e) => panic!("the bare version {text:?} is not a requirement: {e}"),
        }
    }
    if let Ok(req) = brink_registry::parse_requirement(input.requirement)
        && let Ok(version) = brink_registry::parse_version(input.version)
    {
        let _ = req.matches(&version);
    }
    if brink_registry::check_name(input.name).is_ok() {
        assert!(!input.name.is_empty() && input.name.len() <= 63);
        assert!(
            input
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        );
    }
    if brink_registry::check_digest(input.digest).is_ok() {
        assert_eq!(input.digest.len(), 7 + 64);
        assert!(input.digest.starts_with("sha256:"));
    }
    if brink_host::engine::check_header(input.upload, "the upload").is_ok() {
        assert!(
            input.upload.starts_with(b"\0asm"),
            "accepted a non-Wasm upload"
        );
    }
});
