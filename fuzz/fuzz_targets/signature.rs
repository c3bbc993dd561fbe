//! Signatures and the trust policy: public key text, signature text and the
//! signed fields (digest, name, version), as a deploy request carries them.
//! Properties: parsing never panics; a signature verifies only for exactly
//! the fields it was made over (the signed message is unambiguous); the
//! policy accepts exactly when enough distinct trusted keys signed.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use brink_registry::{PublicKey, SecretKey, Signature, TrustPolicy};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Fields<'a> {
    digest: &'a str,
    name: &'a str,
    version: &'a str,
}

#[derive(Debug, Arbitrary)]
enum Sig<'a> {
    /// Made by trusted key 0 or 1 over some fields.
    Made(bool, Fields<'a>),
    /// Any text.
    Raw(&'a str, &'a str),
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    key_text: &'a str,
    signed: Fields<'a>,
    checked: Fields<'a>,
    signatures: Vec<Sig<'a>>,
    required: u8,
}

fn keys() -> &'static [SecretKey; 2] {
    static KEYS: OnceLock<[SecretKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |text: &str| match SecretKey::parse(text) {
            Ok(key) => key,
            Err(e) => panic!("fixture key: {e}"),
        };
        [
            key("brink-ed25519-secret-key AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            key("brink-ed25519-secret-key ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="),
        ]
    })
}

fuzz_target!(|input: Input<'_>| {
    if let Ok(key) = PublicKey::parse(input.key_text) {
        let text = key.to_string();
        assert_eq!(
            PublicKey::parse(&text).ok(),
            Some(key),
            "{text} does not read back"
        );
    }
    let [a, _] = keys();
    let (s, c) = (&input.signed, &input.checked);
    let signature = a.sign(s.digest, s.name, s.version);
    assert!(
        !signature.verifies(s.digest, s.name, s.version)
            || (s.digest, s.name, s.version) == (c.digest, c.name, c.version)
            || !signature.verifies(c.digest, c.name, c.version),
        "a signature over {s:?} also verifies {c:?}"
    );

    let signatures: Vec<Signature> = input
        .signatures
        .iter()
        .map(|sig| match sig {
            Sig::Made(second, f) => keys()[usize::from(*second)].sign(f.digest, f.name, f.version),
            Sig::Raw(key, signature) => Signature {
                key: (*key).to_owned(),
                signature: (*signature).to_owned(),
            },
        })
        .collect();
    let required = usize::from(input.required % 3);
    let Ok(policy) = TrustPolicy::new(keys().iter().map(SecretKey::public), required) else {
        panic!("a policy needing {required} of 2 keys");
    };
    let distinct: std::collections::BTreeSet<PublicKey> = signatures
        .iter()
        .filter(|sig| sig.verifies(c.digest, c.name, c.version))
        .filter_map(|sig| PublicKey::parse(&sig.key).ok())
        .collect();
    let trusted = distinct
        .iter()
        .filter(|k| keys().iter().any(|t| t.public() == **k))
        .count();
    let accepted = policy
        .check(c.digest, c.name, c.version, &signatures)
        .is_ok();
    assert_eq!(
        accepted,
        trusted >= required,
        "{trusted} valid trusted signatures, {required} required"
    );
});
