//! ID-token verification (OpenID Connect Core §3.1.3.7): the JWS signature against the issuer's JWKS, then
//! `iss`, `aud` (and `azp` when there are several audiences), `exp`, `nonce` and `sub`.
//!
//! Signatures are checked with `ring` (already in the tree for TLS) rather than a JWT crate: the compact
//! form is three base64url parts, and only asymmetric algorithms are accepted — RS256/384/512 and
//! ES256/384. `none` and the HMAC algorithms are refused outright, so a token cannot choose to be
//! verified with the client secret or not at all. A `kid` in the header picks the key; without one, the
//! single key of the right type must be the only candidate.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

/// Allowed clock difference between the provider and this server, in seconds.
pub const LEEWAY_SECONDS: i64 = 60;

/// Why an ID token was refused. The messages name the check, never the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the ID token is not a compact JWS")]
    Malformed,
    #[error("the ID token uses algorithm {0}; only RS256/384/512 and ES256/384 are accepted")]
    Algorithm(String),
    #[error("no key of the provider's JWKS matches the ID token (kid {0})")]
    UnknownKey(String),
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token was issued by {found}, not {expected}")]
    Issuer { expected: String, found: String },
    #[error("the ID token is for another client (aud)")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token does not carry the nonce of this sign-in")]
    Nonce,
    #[error("the ID token has no subject")]
    Subject,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// One key of a JSON Web Key Set (RFC 7517); only the members used for RSA and EC keys.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub kid: Option<String>,
    #[serde(rename = "use")]
    pub use_: Option<String>,
    pub alg: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// What the token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds now.
    pub now: i64,
}

/// Verifies `token` and returns its claims.
pub fn verify(token: &str, jwks: &Jwks, expected: Expected<'_>) -> Result<serde_json::Map<String, Value>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).map_err(|_| TokenError::Malformed);
    let header: Header = serde_json::from_slice(&decode(header_b64)?).map_err(|_| TokenError::Malformed)?;
    let signature = decode(signature_b64)?;
    let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    let (kty, crv) = match header.alg.as_str() {
        "RS256" | "RS384" | "RS512" => ("RSA", None),
        "ES256" => ("EC", Some("P-256")),
        "ES384" => ("EC", Some("P-384")),
        other => return Err(TokenError::Algorithm(other.to_owned())),
    };
    let candidates: Vec<&Jwk> = jwks
        .keys
        .iter()
        .filter(|key| key.kty == kty && key.use_.as_deref().is_none_or(|use_| use_ == "sig"))
        .filter(|key| crv.is_none() || key.crv.as_deref() == crv)
        .filter(|key| key.alg.as_deref().is_none_or(|alg| alg == header.alg))
        .filter(|key| header.kid.is_none() || key.kid == header.kid)
        .collect();
    let key = match candidates.as_slice() {
        [key] => *key,
        _ => return Err(TokenError::UnknownKey(header.kid.unwrap_or_else(|| "none".into()))),
    };
    if !signature_verifies(&header.alg, key, signed, &signature) {
        return Err(TokenError::Signature);
    }
    let claims: serde_json::Map<String, Value> =
        serde_json::from_slice(&decode(payload_b64)?).map_err(|_| TokenError::Malformed)?;
    check_claims(&claims, expected)?;
    Ok(claims)
}

fn signature_verifies(alg: &str, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
    let field = |value: &Option<String>| value.as_deref().and_then(|text| URL_SAFE_NO_PAD.decode(text).ok());
    match alg {
        "RS256" | "RS384" | "RS512" => {
            let (Some(n), Some(e)) = (field(&key.n), field(&key.e)) else {
                return false;
            };
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            RsaPublicKeyComponents { n, e }.verify(params, message, signature).is_ok()
        }
        "ES256" | "ES384" => {
            let (Some(x), Some(y)) = (field(&key.x), field(&key.y)) else {
                return false;
            };
            let (params, size) = if alg == "ES256" {
                (&signature::ECDSA_P256_SHA256_FIXED, 32)
            } else {
                (&signature::ECDSA_P384_SHA384_FIXED, 48)
            };
            if x.len() != size || y.len() != size {
                return false;
            }
            let point: Vec<u8> = std::iter::once(4u8).chain(x).chain(y).collect();
            UnparsedPublicKey::new(params, point).verify(message, signature).is_ok()
        }
        _ => false,
    }
}

/// Issuers compare equal when they differ only by a trailing slash.
pub fn same_issuer(one: &str, other: &str) -> bool {
    one.trim_end_matches('/') == other.trim_end_matches('/')
}

fn check_claims(claims: &serde_json::Map<String, Value>, expected: Expected<'_>) -> Result<(), TokenError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let issuer = text("iss").unwrap_or_default();
    if !same_issuer(issuer, expected.issuer) {
        return Err(TokenError::Issuer { expected: expected.issuer.to_owned(), found: issuer.to_owned() });
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(TokenError::Audience);
    }
    if audiences.len() > 1 && text("azp") != Some(expected.client_id) {
        return Err(TokenError::Audience);
    }
    let expires = claims.get("exp").and_then(Value::as_i64).ok_or(TokenError::Expired)?;
    if expires + LEEWAY_SECONDS <= expected.now {
        return Err(TokenError::Expired);
    }
    let nonce = text("nonce").unwrap_or_default();
    if !crate::token::matches(nonce, expected.nonce) || expected.nonce.is_empty() {
        return Err(TokenError::Nonce);
    }
    if text("sub").is_none_or(str::is_empty) {
        return Err(TokenError::Subject);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    use super::*;

    fn encode(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    struct Signer {
        pair: EcdsaKeyPair,
        jwks: Jwks,
    }

    fn signer() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwks = serde_json::from_value(json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}]}))
        .unwrap();
        Signer { pair, jwks }
    }

    impl Signer {
        fn sign(&self, header: Value, claims: Value) -> String {
            let input = format!("{}.{}", encode(&header), encode(&claims));
            let signature = self.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
        }
    }

    const EXPECTED: Expected<'static> =
        Expected { issuer: "https://idp.example", client_id: "cortex", nonce: "n-1", now: 1_000 };

    fn claims() -> Value {
        json!({"iss": "https://idp.example/", "aud": "cortex", "exp": 2_000, "nonce": "n-1", "sub": "u1"})
    }

    #[test]
    fn a_good_token_verifies_and_each_claim_is_checked() {
        let signer = signer();
        let header = json!({"alg": "ES256", "kid": "k1"});
        let ok = signer.sign(header.clone(), claims());
        assert_eq!(verify(&ok, &signer.jwks, EXPECTED).unwrap()["sub"], "u1");
        let with = |name: &str, value: Value| {
            let mut claims = claims();
            claims[name] = value;
            verify(&signer.sign(header.clone(), claims), &signer.jwks, EXPECTED).unwrap_err()
        };
        assert!(matches!(with("iss", json!("https://evil.example")), TokenError::Issuer { .. }));
        assert_eq!(with("aud", json!("other")), TokenError::Audience);
        assert_eq!(with("aud", json!(["cortex", "other"])), TokenError::Audience, "several audiences need azp");
        assert_eq!(with("exp", json!(900)), TokenError::Expired);
        assert_eq!(with("nonce", json!("n-2")), TokenError::Nonce);
        assert_eq!(with("sub", json!("")), TokenError::Subject);
    }

    #[test]
    fn forged_and_unsigned_tokens_are_refused() {
        let signer = signer();
        let other = signer_with_other_key();
        let forged = other.sign(json!({"alg": "ES256", "kid": "k1"}), claims());
        assert_eq!(verify(&forged, &signer.jwks, EXPECTED).unwrap_err(), TokenError::Signature);
        let unsigned = format!("{}.{}.", encode(&json!({"alg": "none"})), encode(&claims()));
        assert_eq!(verify(&unsigned, &signer.jwks, EXPECTED).unwrap_err(), TokenError::Algorithm("none".into()));
        let hmac = format!("{}.{}.c2ln", encode(&json!({"alg": "HS256"})), encode(&claims()));
        assert_eq!(verify(&hmac, &signer.jwks, EXPECTED).unwrap_err(), TokenError::Algorithm("HS256".into()));
        let unknown = signer.sign(json!({"alg": "ES256", "kid": "k9"}), claims());
        assert_eq!(verify(&unknown, &signer.jwks, EXPECTED).unwrap_err(), TokenError::UnknownKey("k9".into()));
        let good = signer.sign(json!({"alg": "ES256", "kid": "k1"}), claims());
        let (head, _) = good.rsplit_once('.').unwrap();
        let mut altered_claims = claims();
        altered_claims["sub"] = json!("admin");
        let spliced = format!(
            "{}.{}.{}",
            head.split('.').next().unwrap(),
            encode(&altered_claims),
            good.rsplit('.').next().unwrap()
        );
        assert_eq!(verify(&spliced, &signer.jwks, EXPECTED).unwrap_err(), TokenError::Signature);
        assert_eq!(verify("a.b", &signer.jwks, EXPECTED).unwrap_err(), TokenError::Malformed);
    }

    fn signer_with_other_key() -> Signer {
        signer()
    }
}
