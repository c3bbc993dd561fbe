//! Ed25519 signatures over a component's digest, name and version, and the
//! N-of-M trust policy a host checks them against.
//!
//! A signature binds all three, so a signature for `filter@1.0.0` cannot be
//! replayed to vouch for `filter@1.0.1` or for another function with the same
//! bytes. Keys are written `ed25519:<base64 of the 32-byte public key>`.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};

/// What a signature covers, before the fields.
const DOMAIN: &[u8] = b"brink-component-signature-v1";
/// What a statement's signature covers, before its kind and text; unlike
/// [`DOMAIN`], so no statement can pass for a component's signature.
const STATEMENT_DOMAIN: &[u8] = b"brink-statement-v1";
const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_HEADER: &str = "brink-ed25519-secret-key";

/// Why a key or signature could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`{0}` is not a public key: expected `ed25519:<base64 of 32 bytes>`")]
    BadPublicKey(String),
    #[error("not a brink secret key file: expected a line `{SECRET_HEADER} <base64 of 32 bytes>`")]
    BadSecretKey,
    #[error("the trust policy needs {required} signatures but trusts only {trusted} keys")]
    Unsatisfiable { required: usize, trusted: usize },
    #[error("the operating system gave no randomness: {0}")]
    Random(String),
}

/// A public key that may vouch for components.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Reads `ed25519:<base64>`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::BadPublicKey(text.to_owned());
        let encoded = text.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = B64
            .decode(encoded)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }

    fn verifying(&self) -> Option<ed25519_dalek::VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A signing key. Its `Debug` never shows the secret.
pub struct SecretKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public())
    }
}

impl SecretKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads the text [`SecretKey::to_file_text`] writes.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(SECRET_HEADER))
            .ok_or(KeyError::BadSecretKey)?;
        let seed: [u8; 32] = B64
            .decode(line.trim())
            .map_err(|_| KeyError::BadSecretKey)?
            .try_into()
            .map_err(|_| KeyError::BadSecretKey)?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The key file's text: the secret, and the public key as a comment.
    pub fn to_file_text(&self) -> String {
        format!(
            "# brink signing key; keep it secret. Public key: {}\n{SECRET_HEADER} {}\n",
            self.public(),
            B64.encode(self.0.to_bytes())
        )
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `name@version` with content `digest`.
    pub fn sign(&self, digest: &str, name: &str, version: &str) -> Signature {
        let signature = self.0.sign(&message(digest, name, version));
        Signature {
            key: self.public().to_string(),
            signature: B64.encode(signature.to_bytes()),
        }
    }

    /// Signs `statement` as a statement of `kind` (e.g. the audit ledger's
    /// `audit-record`), so a signature for one kind never vouches for another.
    pub fn sign_statement(&self, kind: &str, statement: &str) -> Signature {
        let signature = self.0.sign(&statement_message(kind, statement));
        Signature {
            key: self.public().to_string(),
            signature: B64.encode(signature.to_bytes()),
        }
    }
}

/// One signature, as stored with a version and sent on deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// `ed25519:<base64>`: the key that made it.
    pub key: String,
    /// Base64 of the 64-byte signature.
    pub signature: String,
}

impl Signature {
    /// Whether this is a valid signature by its key over these fields.
    /// Never for a field holding NUL: the signed message joins the fields
    /// with NUL, so `("a\0b", "c")` and `("a", "b\0c")` sign the same bytes.
    pub fn verifies(&self, digest: &str, name: &str, version: &str) -> bool {
        if [digest, name, version].iter().any(|f| f.contains('\0')) {
            return false;
        }
        self.verifies_message(&message(digest, name, version))
    }

    /// Whether this is a valid signature by its key over `statement` as a
    /// statement of `kind` ([`SecretKey::sign_statement`]).
    pub fn verifies_statement(&self, kind: &str, statement: &str) -> bool {
        if kind.contains('\0') || statement.contains('\0') {
            return false;
        }
        self.verifies_message(&statement_message(kind, statement))
    }

    fn verifies_message(&self, message: &[u8]) -> bool {
        let Ok(key) = PublicKey::parse(&self.key) else {
            return false;
        };
        let Some(verifying) = key.verifying() else {
            return false;
        };
        let Ok(bytes) = B64.decode(&self.signature) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        verifying.verify(message, &signature).is_ok()
    }
}

fn statement_message(kind: &str, statement: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(STATEMENT_DOMAIN.len() + kind.len() + statement.len() + 3);
    for part in [STATEMENT_DOMAIN, kind.as_bytes(), statement.as_bytes()] {
        m.extend_from_slice(part);
        m.push(0);
    }
    m
}

fn message(digest: &str, name: &str, version: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + digest.len() + name.len() + version.len() + 3);
    for part in [
        DOMAIN,
        digest.as_bytes(),
        name.as_bytes(),
        version.as_bytes(),
    ] {
        m.extend_from_slice(part);
        m.push(0);
    }
    m
}

/// Which keys a host trusts, and how many distinct ones must vouch for a component.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    trusted: BTreeSet<PublicKey>,
    required: usize,
}

/// Why a component's signatures do not meet the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{name}@{version}` needs valid signatures from {required} distinct trusted keys, and has {valid}{}{}{}",
    if .missing.is_empty() { String::new() } else { format!("; no signature from {}", .missing.join(", ")) },
    if .untrusted.is_empty() { String::new() } else { format!("; signed by keys this host does not trust: {}", .untrusted.join(", ")) },
    if .invalid.is_empty() { String::new() } else { format!("; signatures that do not verify (tampered or for other content) by: {}", .invalid.join(", ")) },
)]
pub struct PolicyError {
    pub name: String,
    pub version: String,
    pub required: usize,
    pub valid: usize,
    /// Trusted keys with no valid signature.
    pub missing: Vec<String>,
    /// Keys that signed validly but are not trusted.
    pub untrusted: Vec<String>,
    /// Keys whose signature does not verify.
    pub invalid: Vec<String>,
}

impl TrustPolicy {
    /// Trusts `keys`, needing `required` distinct ones (at most the number of keys).
    pub fn new(
        keys: impl IntoIterator<Item = PublicKey>,
        required: usize,
    ) -> Result<Self, KeyError> {
        let trusted: BTreeSet<PublicKey> = keys.into_iter().collect();
        if required > trusted.len() {
            return Err(KeyError::Unsatisfiable {
                required,
                trusted: trusted.len(),
            });
        }
        Ok(Self { trusted, required })
    }

    /// How many distinct trusted signatures a component needs (0: signatures are not checked).
    pub fn required(&self) -> usize {
        self.required
    }

    /// The trusted keys.
    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.trusted.iter()
    }

    /// Checks `signatures` of `name@version` with content `digest`.
    pub fn check(
        &self,
        digest: &str,
        name: &str,
        version: &str,
        signatures: &[Signature],
    ) -> Result<(), Box<PolicyError>> {
        let mut valid = BTreeSet::new();
        let mut untrusted = BTreeSet::new();
        let mut invalid = BTreeSet::new();
        for s in signatures {
            match PublicKey::parse(&s.key) {
                Ok(key) if s.verifies(digest, name, version) => {
                    if self.trusted.contains(&key) {
                        valid.insert(key);
                    } else {
                        untrusted.insert(key.to_string());
                    }
                }
                _ => {
                    invalid.insert(s.key.clone());
                }
            }
        }
        if valid.len() >= self.required {
            return Ok(());
        }
        Err(Box::new(PolicyError {
            name: name.to_owned(),
            version: version.to_owned(),
            required: self.required,
            valid: valid.len(),
            missing: self
                .trusted
                .iter()
                .filter(|k| !valid.contains(*k))
                .map(ToString::to_string)
                .collect(),
            untrusted: untrusted.into_iter().collect(),
            invalid: invalid.into_iter().collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Failure as _;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn keys(n: usize) -> anyhow::Result<Vec<SecretKey>> {
        Ok((0..n)
            .map(|_| SecretKey::generate())
            .collect::<Result<_, _>>()?)
    }

    #[test]
    fn a_key_file_round_trips_and_never_prints_the_secret() -> anyhow::Result<()> {
        let key = SecretKey::generate()?;
        let text = key.to_file_text();
        let back = SecretKey::parse(&text)?;
        assert_eq!(back.public(), key.public());
        assert!(!format!("{key:?}").contains(&B64.encode(key.0.to_bytes())));
        assert_eq!(PublicKey::parse(&key.public().to_string())?, key.public());
        assert!(SecretKey::parse("hello").is_err());
        assert!(PublicKey::parse("ed25519:AAAA").is_err());
        Ok(())
    }

    #[test]
    fn a_statement_signature_vouches_for_its_kind_and_text_only() -> anyhow::Result<()> {
        let key = SecretKey::generate()?;
        let signed = key.sign_statement("audit-record", "abc");
        assert!(signed.verifies_statement("audit-record", "abc"));
        assert!(!signed.verifies_statement("audit-record", "abd"));
        assert!(!signed.verifies_statement("audit-head", "abc"));
        // Nor does it pass for a component's signature over the same text.
        assert!(!signed.verifies("audit-record", "abc", ""));
        let component = key.sign(DIGEST, "f", "1.0.0");
        assert!(!component.verifies_statement(DIGEST, "f"));
        Ok(())
    }

    #[test]
    fn a_signature_never_verifies_fields_split_differently_at_a_nul() -> anyhow::Result<()> {
        // The signed message joins the fields with NUL; a NUL inside a field
        // would let one signature stand for another split of the same bytes.
        let key = SecretKey::generate()?;
        let signed = key.sign(DIGEST, "a", "1.0.0\0b");
        assert!(!signed.verifies(DIGEST, "a\x001.0.0", "b"));
        assert!(!signed.verifies(DIGEST, "a", "1.0.0\0b"));
        let signed = key.sign(DIGEST, "filter", "1.0.0");
        assert!(signed.verifies(DIGEST, "filter", "1.0.0"));
        Ok(())
    }

    #[test]
    fn two_of_three_needs_two_distinct_trusted_signatures() -> anyhow::Result<()> {
        let k = keys(4)?;
        let policy = TrustPolicy::new(k[..3].iter().map(SecretKey::public), 2)?;
        let one = [k[0].sign(DIGEST, "filter", "1.0.0")];
        let e = policy.check(DIGEST, "filter", "1.0.0", &one).failure()?;
        assert_eq!((e.valid, e.missing.len()), (1, 2));
        assert!(
            e.to_string().contains("needs valid signatures from 2"),
            "{e}"
        );

        let same_twice = [one[0].clone(), one[0].clone()];
        assert!(
            policy
                .check(DIGEST, "filter", "1.0.0", &same_twice)
                .is_err()
        );

        let two = [one[0].clone(), k[2].sign(DIGEST, "filter", "1.0.0")];
        policy.check(DIGEST, "filter", "1.0.0", &two)?;
        Ok(())
    }

    #[test]
    fn signatures_bind_name_version_and_content() -> anyhow::Result<()> {
        let k = keys(2)?;
        let policy = TrustPolicy::new([k[0].public()], 1)?;
        let s = [k[0].sign(DIGEST, "filter", "1.0.0")];
        for (digest, name, version) in [
            ("sha256:11", "filter", "1.0.0"),
            (DIGEST, "alert", "1.0.0"),
            (DIGEST, "filter", "1.0.1"),
        ] {
            let e = policy.check(digest, name, version, &s).failure()?;
            assert_eq!(e.invalid.len(), 1, "{e}");
        }
        let untrusted = [k[1].sign(DIGEST, "filter", "1.0.0")];
        let e = policy
            .check(DIGEST, "filter", "1.0.0", &untrusted)
            .failure()?;
        assert_eq!(e.untrusted, vec![k[1].public().to_string()]);
        assert!(e.to_string().contains("does not trust"), "{e}");
        Ok(())
    }

    #[test]
    fn a_policy_cannot_need_more_keys_than_it_trusts() -> anyhow::Result<()> {
        let k = keys(1)?;
        assert!(TrustPolicy::new([k[0].public()], 2).is_err());
        TrustPolicy::default().check(DIGEST, "filter", "1.0.0", &[])?;
        Ok(())
    }
}
