//! Admin JWTs, verified against a JWKS file: any token text, and tokens
//! built from fuzzed headers and claims, signed with the JWKS key or not.
//! Properties: verification never panics; a token not signed by a key in
//! the JWKS is never accepted; an accepted token names the configured
//! issuer, has not expired, and grants what its claims say.
#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use brink_host::manifest::JwtSection;
use brink_host::node::api::auth::{JwtVerifier, Principal};
use ed25519_dalek::Signer as _;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://id.example/realms/edge";

#[derive(Debug, Arbitrary)]
enum Header<'a> {
    EdDsa { kid: bool },
    Alg(&'a str),
    Raw(&'a str),
}

#[derive(Debug, Arbitrary)]
enum Time {
    Absent,
    /// Seconds from now.
    From(i32),
    Raw(i64),
    Text,
}

#[derive(Debug, Arbitrary)]
struct Claims<'a> {
    right_issuer: bool,
    issuer: &'a str,
    exp: Time,
    nbf: Time,
    audience: Option<&'a str>,
    roles: Vec<&'a str>,
    realm_roles: bool,
    tenant: Option<&'a str>,
    raw: Option<&'a str>,
}

#[derive(Debug, Arbitrary)]
enum Signing<'a> {
    Right,
    Unsigned,
    OtherKey,
    Raw(&'a str),
}

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    Text(&'a str),
    Built {
        header: Header<'a>,
        claims: Claims<'a>,
        signing: Signing<'a>,
    },
}

fn signing_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("brink-fuzz-jwt-{}", std::process::id()));
        let x = B64URL.encode(signing_key(7).verifying_key().to_bytes());
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"k1","alg":"EdDSA","use":"sig"}}]}}"#
        );
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("jwks.json"), jwks));
        if let Err(e) = written {
            panic!("writing the fixture JWKS: {e}");
        }
        let settings = JwtSection {
            jwks_file: "jwks.json".into(),
            issuer: ISSUER.to_owned(),
            audience: None,
            tenant_claim: "brink_tenant".to_owned(),
            operator_role: "brink-operator".to_owned(),
            leeway_s: Some(0),
        };
        match JwtVerifier::open(&settings, &dir) {
            Ok(v) => v,
            Err(e) => panic!("fixture verifier: {e:#}"),
        }
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn time(t: &Time) -> Option<serde_json::Value> {
    match t {
        Time::Absent => None,
        Time::From(s) => Some(serde_json::json!(now() + i64::from(*s))),
        Time::Raw(v) => Some(serde_json::json!(v)),
        Time::Text => Some(serde_json::json!("tomorrow")),
    }
}

fn token(header: &Header<'_>, claims: &Claims<'_>, signing: &Signing<'_>) -> String {
    let header = match header {
        Header::EdDsa { kid: true } => r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#.to_owned(),
        Header::EdDsa { kid: false } => r#"{"alg":"EdDSA","typ":"JWT"}"#.to_owned(),
        Header::Alg(alg) => serde_json::json!({ "alg": alg, "kid": "k1" }).to_string(),
        Header::Raw(raw) => (*raw).to_owned(),
    };
    let mut body = serde_json::Map::new();
    let issuer = if claims.right_issuer {
        ISSUER
    } else {
        claims.issuer
    };
    body.insert("iss".into(), issuer.into());
    for (name, t) in [("exp", &claims.exp), ("nbf", &claims.nbf)] {
        if let Some(v) = time(t) {
            body.insert(name.into(), v);
        }
    }
    if let Some(aud) = claims.audience {
        body.insert("aud".into(), aud.into());
    }
    let roles = serde_json::json!(claims.roles);
    if claims.realm_roles {
        body.insert("realm_access".into(), serde_json::json!({ "roles": roles }));
    } else {
        body.insert("roles".into(), roles);
    }
    if let Some(tenant) = claims.tenant {
        body.insert("brink_tenant".into(), tenant.into());
    }
    let body = match claims.raw {
        Some(raw) => raw.to_owned(),
        None => serde_json::Value::Object(body).to_string(),
    };
    let signed = format!("{}.{}", B64URL.encode(header), B64URL.encode(body));
    let signature = match signing {
        Signing::Right => B64URL.encode(signing_key(7).sign(signed.as_bytes()).to_bytes()),
        Signing::OtherKey => B64URL.encode(signing_key(8).sign(signed.as_bytes()).to_bytes()),
        Signing::Unsigned => String::new(),
        Signing::Raw(raw) => (*raw).to_owned(),
    };
    format!("{signed}.{signature}")
}

fuzz_target!(|input: Input<'_>| {
    let verifier = verifier();
    match input {
        Input::Text(text) => {
            // No key signed it (bar a forged ed25519 signature).
            assert!(
                verifier.verify(text).is_err(),
                "accepted the unsigned {text:?}"
            );
        }
        Input::Built {
            header,
            claims,
            signing,
        } => {
            let token = token(&header, &claims, &signing);
            let Ok(principal) = verifier.verify(&token) else {
                return;
            };
            assert!(
                matches!(signing, Signing::Right),
                "accepted a token not signed by the JWKS key"
            );
            if claims.raw.is_some() {
                return;
            }
            assert!(
                claims.right_issuer || claims.issuer == ISSUER,
                "accepted another issuer"
            );
            match &claims.exp {
                Time::From(s) => assert!(*s >= -1, "accepted a token expired {s} s ago"),
                Time::Raw(v) => assert!(*v >= now() - 1, "accepted a token that expired at {v}"),
                Time::Absent | Time::Text => panic!("accepted a token without a valid exp"),
            }
            match principal {
                Principal::Operator => assert!(claims.roles.contains(&"brink-operator")),
                Principal::Tenant(t) => assert_eq!(Some(t.as_str()), claims.tenant),
            }
        }
    }
});
