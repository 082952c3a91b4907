//! In-process identity providers for sign-in tests (SPEC §11.1, Appendix B "Login providers"): an
//! OpenID Connect provider ([`FakeOidc`]: discovery, JWKS, authorization endpoint, token endpoint issuing
//! signed ID tokens, userinfo) and GitHub's OAuth app endpoints ([`FakeGithub`]: authorize, access token,
//! `/user`, `/user/emails`). Both speak the real protocols over loopback HTTP and check what a real
//! provider checks (client credentials, PKCE S256 verifier, redirect URI, single-use codes), and both can
//! be told to misbehave the way an attacker or a broken provider would ([`Tamper`]).
//!
//! ID tokens are signed with ES256 (a key generated per server) or RS256 (a fixed 2048-bit test key that
//! signs nothing else); `iat`/`exp` come from the clock the test passes in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cortex_core::clock::Clock;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A fixed RSA test key (PKCS#1 DER, base64): ring cannot generate RSA keys.
const RSA_TEST_KEY: &[&str] = &[
    "MIIEogIBAAKCAQEArZNsHhcjtlIi4WP2lIDjBgzRrV8pYaoqCKgyYgJdFwkKUgU5McUaQmHqjTpGw6fdItjODACS+eGq+HZ/cyfT",
    "x+uWAd+QXPfdsc5J0p2C1VR4qvXmYp1IKO1bzwv+uLgZQ2vsPv4hVBXLQlV1HNiYVpNI/QD06DP4Smxluoh2evA3SOY3izKJVXnz",
    "APmoit3uieeDNO4oMWOuAopBFOK+rSeCV0CIi2rTwKqAZ66W/UaX0kk8ZSYKoAvJ13nI1aNsGNDsd3IUmrJRGIATZ2S2Khi1zFmA",
    "aYnoUsGvP6t9NYnSrS5cuTiAufTZyEl6FV9u7RmtP4z707/l2hls8qXN7QIDAQABAoIBAAQoxkcMpLtY9FiEdx4VCOZLdtfJx2RS",
    "z0ngppUWJj8SeqKUrkuXbpsSHRclbcOA+X8nr6ehI48k0vO8D9ma0KFCWi3Ger9bj36pU+KzNGAic3dx8oNrmOp60Op2c1608fgI",
    "Cpkc06rKkJG7mgA8Xsl4+IoFf0OJgUTenEEaxYS0bu4h8YFVXbHgUJ0yk+gskFtKzsTQGjqWTCxOuvt0pjQzfgIML9ZnrHVGlvSv",
    "iiM+tPoGnO7Ylwit4YJXIRt3QbQvCgBSzAoIC/4Sk0nTkpUMr6eC9qTShnxvq7OIPEvSoR4xbJEdktrKo2yPTVbokpUXQxJrnYvB",
    "N9fSd9vxSakCgYEA4FClt5p+7C/4fMMyY1oMjdFYolVfuBqoqs0gVGw2UNQHiHyisO9h8+t8ywV6s+NuxRzECAsoVB7MRXTL4QZY",
    "Db1iyuJvvvHdhLp/pNakrkxTe1xZ9fwZg1Be06NfPlpd7xzSz6K4ezMlcBa5jB/bf5EQHF13dHxgcQLeojIW/3kCgYEAxhgFARxl",
    "lHCqzRXElzaw7toVxrQUbbiqxwMczHlZ0qfuPHdEu6a109GVnpIyjrVX0ieoA8Q0Xo4/sLBxDjKXlztKWLr7yDfqmPicBjmrP2ur",
    "0bWgc3a+eAG43blMJrh2KkJqnV6Hhmy+IBnooCdGspHDJP4QluO5xwU6+tQmYRUCgYBwvNetAX8M4cc3nTsz58wrcq3jWJk1BGEF",
    "BvdattBNq2Ll3A5Acu9+Ejq0JtrWklXXx29Ww5TPQnNT7TGStQeIUEjYwxl6lEDLNph0llRKLZ4/f9jO4pdIAhrGr3Ns+SoAxTHG",
    "nXeuo7QLM8CphlFhOd0pBGjHKMOnyNNwHVClsQKBgD8tzfrKucMcI/2A4dBwiwHC4IsdSB6udRk/7uFwGqvLD3qNd4h55SgHgjau",
    "3h0RzU6jgzygSSuXJs0NmSE0FZEQQegGyuLSoqnjMK/zmKCDkKszyFbLGnhf5DwjKxx2XImh4SsLySGgcQr/+GeL30p4nsqflV7q",
    "hofpLSRuoUb5AoGAOQAuvjVq+ce12w5zWabKEGz1CaaAPop8SGbGYXhd/blGRCvZk9aNVi+tDLr04ThesLRydX/Fc28BDoco7saJ",
    "4OoYRg+en2EWEi93kwvri2cC3vy5JvSAWRRi71PESzbeXGcwjcXfA3xJvoCvonfRnj/lhArQVlPcZ7BREsfiP0o=",
];

/// Who signs in at the fake provider.
#[derive(Debug, Clone)]
pub struct FakeUser {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

impl FakeUser {
    pub fn new(subject: &str, email: &str) -> FakeUser {
        FakeUser { subject: subject.into(), email: email.into(), email_verified: true, name: format!("User {subject}") }
    }
}

/// How the next ID token is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    /// The `nonce` claim differs from the one of the authorization request.
    WrongNonce,
    /// The signature is made by a key that is not in the JWKS.
    BadSignature,
    /// `exp` lies an hour in the past.
    Expired,
    /// `aud` names another client.
    WrongAudience,
    /// `iss` names another issuer.
    WrongIssuer,
    /// `alg: none`, no signature.
    Unsigned,
}

/// The signing algorithm of ID tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Rs256,
}

struct Grant {
    challenge: String,
    redirect_uri: String,
    nonce: Option<String>,
    user: FakeUser,
}

struct Shared {
    base: String,
    client_id: String,
    client_secret: String,
    clock: Arc<dyn Clock>,
    user: FakeUser,
    tamper: Tamper,
    alg: Alg,
    claims_in_id_token: bool,
    codes: HashMap<String, Grant>,
    access: HashMap<String, FakeUser>,
    authorize_requests: Vec<HashMap<String, String>>,
    token_requests: usize,
    /// GitHub: the answer of `/user/emails`.
    emails: Vec<Value>,
    es256: EcdsaKeyPair,
    rs256: RsaKeyPair,
    /// Signs forged tokens: same algorithm, a key nobody published.
    forger: EcdsaKeyPair,
}

type Handle = Arc<Mutex<Shared>>;

fn lock(handle: &Handle) -> std::sync::MutexGuard<'_, Shared> {
    handle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn new_ec_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("ec key");
    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("ec key")
}

fn rsa_key() -> RsaKeyPair {
    let der = STANDARD.decode(RSA_TEST_KEY.concat()).expect("test key is base64");
    RsaKeyPair::from_der(&der).expect("test key is PKCS#1 RSA")
}

fn random() -> String {
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).expect("random");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake provider");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

fn shared(client_id: &str, client_secret: &str, clock: Arc<dyn Clock>) -> Shared {
    Shared {
        base: String::new(),
        client_id: client_id.into(),
        client_secret: client_secret.into(),
        clock,
        user: FakeUser::new("user-1", "user@example.com"),
        tamper: Tamper::None,
        alg: Alg::Es256,
        claims_in_id_token: true,
        codes: HashMap::new(),
        access: HashMap::new(),
        authorize_requests: Vec::new(),
        token_requests: 0,
        emails: Vec::new(),
        es256: new_ec_key(),
        rs256: rsa_key(),
        forger: new_ec_key(),
    }
}

/// The authorization endpoint of both fakes: checks the request and redirects back with a code.
async fn authorize(State(handle): State<Handle>, Query(query): Query<HashMap<String, String>>) -> Response {
    let mut shared = lock(&handle);
    shared.authorize_requests.push(query.clone());
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    if field("client_id") != shared.client_id {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    if field("code_challenge_method") != "S256" || field("code_challenge").is_empty() || field("state").is_empty() {
        return (StatusCode::BAD_REQUEST, "PKCE S256 and state are required").into_response();
    }
    let Ok(mut back) = url::Url::parse(&field("redirect_uri")) else {
        return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response();
    };
    let code = random();
    let grant = Grant {
        challenge: field("code_challenge"),
        redirect_uri: field("redirect_uri"),
        nonce: query.get("nonce").cloned(),
        user: shared.user.clone(),
    };
    shared.codes.insert(code.clone(), grant);
    back.query_pairs_mut().append_pair("code", &code).append_pair("state", &field("state"));
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1, form-encoded parts) or the form.
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, String) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    if let Some((id, secret)) = basic.as_deref().and_then(|pair| pair.split_once(':')) {
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={text}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return (decode(id), decode(secret));
    }
    (form.get("client_id").cloned().unwrap_or_default(), form.get("client_secret").cloned().unwrap_or_default())
}

/// Checks a code grant; the grant on success, the error answer otherwise.
fn redeem(shared: &mut Shared, headers: &HeaderMap, body: &str) -> Result<Grant, &'static str> {
    shared.token_requests += 1;
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let (id, secret) = client_credentials(headers, &form);
    if id != shared.client_id || secret != shared.client_secret {
        return Err("invalid_client");
    }
    if field("grant_type") != "authorization_code" {
        return Err("unsupported_grant_type");
    }
    let grant = shared.codes.remove(&field("code")).ok_or("invalid_grant")?;
    if s256(&field("code_verifier")) != grant.challenge || field("redirect_uri") != grant.redirect_uri {
        return Err("invalid_grant");
    }
    Ok(grant)
}

/// A running fake OpenID Connect provider.
pub struct FakeOidc {
    /// The issuer (also the base URL of every endpoint).
    pub issuer: String,
    handle: Handle,
}

impl FakeOidc {
    /// Starts a provider that knows one client.
    pub async fn start(client_id: &str, client_secret: &str, clock: Arc<dyn Clock>) -> FakeOidc {
        let handle: Handle = Arc::new(Mutex::new(shared(client_id, client_secret, clock)));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(oidc_token))
            .route("/userinfo", get(userinfo))
            .with_state(handle.clone());
        let issuer = serve(app).await;
        lock(&handle).base = issuer.clone();
        FakeOidc { issuer, handle }
    }

    /// Who signs in next.
    pub fn set_user(&self, user: FakeUser) {
        lock(&self.handle).user = user;
    }

    pub fn set_tamper(&self, tamper: Tamper) {
        lock(&self.handle).tamper = tamper;
    }

    pub fn set_alg(&self, alg: Alg) {
        lock(&self.handle).alg = alg;
    }

    /// Whether ID tokens carry `email`/`email_verified` (otherwise only the userinfo endpoint does).
    pub fn set_claims_in_id_token(&self, included: bool) {
        lock(&self.handle).claims_in_id_token = included;
    }

    /// The query of every authorization request so far.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        lock(&self.handle).authorize_requests.clone()
    }

    /// How many token requests arrived.
    pub fn token_requests(&self) -> usize {
        lock(&self.handle).token_requests
    }
}

async fn discovery(State(handle): State<Handle>) -> Response {
    let base = lock(&handle).base.clone();
    axum::Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
    .into_response()
}

async fn jwks(State(handle): State<Handle>) -> Response {
    let shared = lock(&handle);
    let point = shared.es256.public_key().as_ref();
    let rsa = RsaPublicKeyComponents::<Vec<u8>>::from(shared.rs256.public());
    axum::Json(json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "es-1", "use": "sig", "alg": "ES256",
         "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])},
        {"kty": "RSA", "kid": "rs-1", "use": "sig", "alg": "RS256",
         "n": URL_SAFE_NO_PAD.encode(&rsa.n), "e": URL_SAFE_NO_PAD.encode(&rsa.e)},
    ]}))
    .into_response()
}

fn id_token(shared: &Shared, grant: &Grant) -> String {
    let now = shared.clock.now().timestamp();
    let mut claims = json!({
        "iss": shared.base,
        "sub": grant.user.subject,
        "aud": shared.client_id,
        "iat": now,
        "exp": now + 300,
        "nonce": grant.nonce,
    });
    if shared.claims_in_id_token {
        claims["email"] = json!(grant.user.email);
        claims["email_verified"] = json!(grant.user.email_verified);
        claims["name"] = json!(grant.user.name);
    }
    match shared.tamper {
        Tamper::None | Tamper::BadSignature | Tamper::Unsigned => {}
        Tamper::WrongNonce => claims["nonce"] = json!("not-the-nonce-of-this-sign-in"),
        Tamper::Expired => {
            claims["iat"] = json!(now - 7_200);
            claims["exp"] = json!(now - 3_600);
        }
        Tamper::WrongAudience => claims["aud"] = json!("another-client"),
        Tamper::WrongIssuer => claims["iss"] = json!("https://evil.example"),
    }
    let rng = SystemRandom::new();
    if shared.tamper == Tamper::Unsigned {
        return format!("{}.{}.", b64_json(&json!({"alg": "none"})), b64_json(&claims));
    }
    let (header, key) = match shared.alg {
        Alg::Es256 => (json!({"alg": "ES256", "kid": "es-1", "typ": "JWT"}), "es"),
        Alg::Rs256 => (json!({"alg": "RS256", "kid": "rs-1", "typ": "JWT"}), "rs"),
    };
    let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
    let signature = match (key, shared.tamper) {
        (_, Tamper::BadSignature) => shared.forger.sign(&rng, input.as_bytes()).map(|sig| sig.as_ref().to_vec()),
        ("es", _) => shared.es256.sign(&rng, input.as_bytes()).map(|sig| sig.as_ref().to_vec()),
        _ => {
            let mut sig = vec![0; shared.rs256.public().modulus_len()];
            shared.rs256.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).map(|()| sig)
        }
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.unwrap_or_default()))
}

async fn oidc_token(State(handle): State<Handle>, headers: HeaderMap, body: String) -> Response {
    let mut shared = lock(&handle);
    match redeem(&mut shared, &headers, &body) {
        Ok(grant) => {
            let access = random();
            let token = id_token(&shared, &grant);
            shared.access.insert(access.clone(), grant.user);
            axum::Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 300, "id_token": token}))
                .into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error}))).into_response(),
    }
}

fn bearer_user(handle: &Handle, headers: &HeaderMap) -> Option<FakeUser> {
    let token = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
    lock(handle).access.get(token).cloned()
}

async fn userinfo(State(handle): State<Handle>, headers: HeaderMap) -> Response {
    match bearer_user(&handle, &headers) {
        Some(user) => axum::Json(json!({"sub": user.subject, "email": user.email,
                                        "email_verified": user.email_verified, "name": user.name}))
        .into_response(),
        None => (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_token"}))).into_response(),
    }
}

/// A running fake of GitHub's OAuth app endpoints; the web base is [`FakeGithub::url`], the API base
/// [`FakeGithub::api_url`].
pub struct FakeGithub {
    pub url: String,
    pub api_url: String,
    handle: Handle,
}

impl FakeGithub {
    pub async fn start(client_id: &str, client_secret: &str, clock: Arc<dyn Clock>) -> FakeGithub {
        let handle: Handle = Arc::new(Mutex::new(shared(client_id, client_secret, clock)));
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(github_token))
            .route("/api/user", get(github_user))
            .route("/api/user/emails", get(github_emails))
            .with_state(handle.clone());
        let url = serve(app).await;
        let fake = FakeGithub { api_url: format!("{url}/api"), url, handle };
        fake.set_user(FakeUser::new("4242", "octo@example.com"));
        fake
    }

    /// Who signs in next: `subject` is the numeric user id; the emails are the primary one (verified as
    /// `user.email_verified` says) and a verified secondary one.
    pub fn set_user(&self, user: FakeUser) {
        let mut shared = lock(&self.handle);
        shared.emails = vec![
            json!({"email": "secondary@example.com", "primary": false, "verified": true, "visibility": null}),
            json!({"email": user.email, "primary": true, "verified": user.email_verified, "visibility": "private"}),
        ];
        shared.user = user;
    }

    /// The query of every authorization request so far.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        lock(&self.handle).authorize_requests.clone()
    }
}

async fn github_token(State(handle): State<Handle>, headers: HeaderMap, body: String) -> Response {
    let mut shared = lock(&handle);
    // GitHub answers refused grants with 200 and an `error` member.
    match redeem(&mut shared, &headers, &body) {
        Ok(grant) => {
            let access = format!("gho_{}", random());
            shared.access.insert(access.clone(), grant.user);
            axum::Json(json!({"access_token": access, "token_type": "bearer", "scope": "read:user,user:email"}))
                .into_response()
        }
        Err(error) => {
            axum::Json(json!({"error": error, "error_description": "The code passed is incorrect or expired."}))
                .into_response()
        }
    }
}

async fn github_user(State(handle): State<Handle>, headers: HeaderMap) -> Response {
    match bearer_user(&handle, &headers) {
        Some(user) => {
            let id: i64 = user.subject.parse().unwrap_or(1);
            axum::Json(json!({"id": id, "login": "octocat", "name": user.name, "email": null})).into_response()
        }
        None => (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials"}))).into_response(),
    }
}

async fn github_emails(State(handle): State<Handle>, headers: HeaderMap) -> Response {
    match bearer_user(&handle, &headers) {
        Some(_) => axum::Json(Value::Array(lock(&handle).emails.clone())).into_response(),
        None => (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials"}))).into_response(),
    }
}
