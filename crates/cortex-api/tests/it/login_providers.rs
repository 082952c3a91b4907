//! Sign-in through login providers (SPEC §11.1, Appendix B "Login providers"; issue 14 point 2) against
//! in-process providers speaking the real protocols ([`cortex_testkit::fake_login`]): the whole browser
//! flow for OpenID Connect and GitHub, the attacks a callback must survive (foreign or replayed state,
//! wrong nonce, forged or unsigned token, expired token, wrong audience or issuer, unverified email,
//! unknown email without auto-signup), and the admin-only management at `/settings/login-providers`.

use std::sync::Arc;

use cortex_api::ApiConfig;
use cortex_api::login::providers_from_env;
use cortex_core::role::Role;
use cortex_testkit::fake_login::{Alg, FakeGithub, FakeOidc, FakeUser, Tamper};
use cortex_testkit::{TestStore, both_engines};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

const CLIENT_ID: &str = "cortex-test-client";
const CLIENT_SECRET: &str = "fake-client-secret-9f8e7d6c5b4a";

fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")))
        .map(|value| value.split(';').next().unwrap_or_default().to_owned())
}

fn location(response: &reqwest::Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// A started sign-in: where the provider sent the browser back, and the browser's state cookie.
struct Returned {
    callback: String,
    state_cookie: String,
}

/// Clicks the provider's button and signs in at the provider; stops before the callback.
async fn to_provider_and_back(app: &TestApp, provider: &str) -> Returned {
    let started = browser().get(app.url(&format!("/auth/login/{provider}?next=/ui/jobs"))).send().await.unwrap();
    assert_eq!(started.status(), 303, "{}", started.text().await.unwrap());
    let state_cookie = set_cookie(&started, "cortex_oauth_state").expect("the state cookie");
    let at_provider = browser().get(location(&started)).send().await.unwrap();
    assert_eq!(at_provider.status(), 302, "the provider accepted the authorization request");
    let callback = location(&at_provider);
    assert!(callback.starts_with(&app.url(&format!("/auth/callback/{provider}?"))), "{callback}");
    Returned { callback, state_cookie }
}

async fn complete(returned: &Returned) -> reqwest::Response {
    browser().get(&returned.callback).header(COOKIE, &returned.state_cookie).send().await.unwrap()
}

/// Signs in through `provider`; the session cookie on success, the refusal otherwise.
async fn sign_in(app: &TestApp, provider: &str) -> Result<String, reqwest::Response> {
    let response = complete(&to_provider_and_back(app, provider).await).await;
    if response.status() != 303 {
        return Err(response);
    }
    assert_eq!(location(&response), "/ui/jobs", "back to the page the sign-in started from");
    Ok(set_cookie(&response, "cortex_session").expect("a session cookie"))
}

/// Who a session cookie belongs to.
async fn whoami(app: &TestApp, cookie: &str) -> Value {
    let response = browser().get(app.url("/auth/session")).header(COOKIE, cookie).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn user(app: &TestApp, email: &str, role: Role) -> uuid::Uuid {
    let mut tx = app.test.store.begin().await.unwrap();
    let user = tx.insert_user("Existing person", Some(email), role).await.unwrap();
    tx.commit().await.unwrap();
    user.id
}

async fn put_provider(app: &TestApp, body: Value) -> reqwest::Response {
    app.http.put(app.url("/settings/login-providers")).bearer_auth(&app.admin).json(&body).send().await.unwrap()
}

async fn oidc_app(t: TestStore) -> (TestApp, FakeOidc) {
    let app = TestApp::spawn(t).await;
    let fake = FakeOidc::start(CLIENT_ID, CLIENT_SECRET, Arc::new(app.test.clock.clone())).await;
    let created = put_provider(
        &app,
        json!({"provider": "oidc", "display_name": "Company SSO", "issuer_url": fake.issuer,
               "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    )
    .await;
    assert_eq!(created.status(), 201);
    (app, fake)
}

/// Refused with `status`, a page saying `words`, and no session.
async fn assert_refused(result: Result<String, reqwest::Response>, status: u16, words: &str) {
    let response = result.err().unwrap_or_else(|| panic!("signed in although it should fail with {words}"));
    assert_eq!(response.status(), status);
    assert!(set_cookie(&response, "cortex_session").is_none());
    let page = response.text().await.unwrap();
    assert!(page.contains(words), "{words} missing from {page}");
}

both_engines!(oidc_sign_in_opens_a_session_like_password_login, |t: TestStore| async move {
    let (app, fake) = oidc_app(t).await;
    let existing = user(&app, "ada@example.com", Role::Operator).await;
    fake.set_user(FakeUser::new("idp-ada", "Ada@Example.com"));

    let providers: Value = app.http.get(app.url("/auth/providers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        providers["items"],
        json!([{"provider": "oidc", "name": "Company SSO", "login_url": "/auth/login/oidc"}])
    );

    let cookie = sign_in(&app, "oidc").await.expect("signed in");
    let session = whoami(&app, &cookie).await;
    assert_eq!(session["user"]["id"], existing.to_string(), "the verified email found the existing user");
    assert_eq!(session["role"], "operator");
    let request = &fake.authorize_requests()[0];
    assert_eq!(request["code_challenge_method"], "S256");
    assert_eq!(request["scope"], "openid email profile");
    assert!(request["nonce"].len() >= 43 && request["state"].len() >= 43, "256-bit state and nonce");
    let token = cookie.trim_start_matches("cortex_session=");
    let stored = app.test.query_text("SELECT token_hash FROM web_session".into()).await.unwrap();
    assert_eq!(stored, [cortex_auth::token::hash(token)], "a session like password sign-in stores");
    let audit = app.test.query_text("SELECT action FROM audit_log ORDER BY created_at".into()).await.unwrap();
    assert!(audit.contains(&"user.link_identity".to_owned()) && audit.contains(&"auth.login".to_owned()), "{audit:?}");

    // The identity is linked: a changed email at the provider still signs in the same user.
    fake.set_user(FakeUser::new("idp-ada", "ada.lovelace@example.org"));
    let again = sign_in(&app, "oidc").await.expect("signed in by subject");
    assert_eq!(whoami(&app, &again).await["user"]["id"], existing.to_string());
    // RS256 tokens, and email claims only at the userinfo endpoint, work too.
    fake.set_alg(Alg::Rs256);
    fake.set_claims_in_id_token(false);
    let third = sign_in(&app, "oidc").await.expect("RS256 and userinfo");
    assert_eq!(whoami(&app, &third).await["user"]["id"], existing.to_string());
});

both_engines!(callbacks_with_foreign_or_replayed_state_are_refused, |t: TestStore| async move {
    let (app, fake) = oidc_app(t).await;
    user(&app, "user@example.com", Role::Viewer).await;

    // A callback link made in another browser (the attacker's own sign-in) does not sign this one in.
    let attackers = to_provider_and_back(&app, "oidc").await;
    let victim = browser().get(&attackers.callback).send().await.unwrap();
    assert_refused(Err(victim), 400, "not started in this browser").await;

    // A state that does not belong to the sign-in (tampered in the URL) is refused.
    let returned = to_provider_and_back(&app, "oidc").await;
    let wrong = Returned {
        callback: returned.callback.replace("state=", "state=x"),
        state_cookie: returned.state_cookie.replace('=', "=x"),
    };
    assert_refused(Err(complete(&wrong).await), 400, "unknown or was already used").await;
    // The genuine one still works once, and never twice.
    assert_eq!(complete(&returned).await.status(), 303);
    assert_refused(Err(complete(&returned).await), 400, "unknown or was already used").await;
    // Started for one provider type, returned to another: refused.
    let other = Returned { callback: returned.callback.replace("/oidc?", "/google?"), ..returned };
    assert_refused(Err(complete(&other).await), 400, "").await;
    assert_eq!(fake.token_requests(), 1, "no code of a refused callback reached the token endpoint");
});

both_engines!(forged_expired_and_misdirected_id_tokens_are_refused, |t: TestStore| async move {
    let (app, fake) = oidc_app(t).await;
    user(&app, "user@example.com", Role::Admin).await;
    for (tamper, words) in [
        (Tamper::WrongNonce, "nonce"),
        (Tamper::BadSignature, "signature does not verify"),
        (Tamper::Expired, "expired"),
        (Tamper::WrongAudience, "another client"),
        (Tamper::WrongIssuer, "issued by https://evil.example"),
        (Tamper::Unsigned, "algorithm none"),
    ] {
        fake.set_tamper(tamper);
        assert_refused(sign_in(&app, "oidc").await, 401, words).await;
    }
    fake.set_tamper(Tamper::None);
    let cookie = sign_in(&app, "oidc").await.expect("an honest token signs in");
    assert_eq!(whoami(&app, &cookie).await["role"], "admin");
    let sessions = app.test.query_text("SELECT token_hash FROM web_session".into()).await.unwrap();
    assert_eq!(sessions.len(), 1, "only the honest sign-in made a session");
});

both_engines!(unverified_and_unknown_emails_are_refused_unless_auto_signup, |t: TestStore| async move {
    let (app, fake) = oidc_app(t).await;
    user(&app, "known@example.com", Role::Viewer).await;
    fake.set_user(FakeUser { email_verified: false, ..FakeUser::new("idp-known", "known@example.com") });
    assert_refused(sign_in(&app, "oidc").await, 401, "has not verified known@example.com").await;

    fake.set_user(FakeUser::new("idp-stranger", "stranger@example.com"));
    assert_refused(sign_in(&app, "oidc").await, 403, "ask an administrator to invite you").await;
    let users = app.test.query_text("SELECT email FROM user_account WHERE email IS NOT NULL".into()).await.unwrap();
    assert_eq!(users, ["known@example.com"], "no account was created");

    // With auto-signup the stranger gets an account with the provider's signup role.
    let updated = put_provider(
        &app,
        json!({"provider": "oidc", "issuer_url": fake.issuer, "client_id": CLIENT_ID, "auto_signup": true,
               "signup_role": "operator"}),
    )
    .await;
    assert_eq!(updated.status(), 200, "replaced, keeping the stored secret");
    let cookie = sign_in(&app, "oidc").await.expect("auto-signup");
    let session = whoami(&app, &cookie).await;
    assert_eq!(
        (session["user"]["email"].as_str(), session["role"].as_str()),
        (Some("stranger@example.com"), Some("operator"))
    );
    // Disabled users get no session, however they arrive.
    app.test
        .execute_raw("UPDATE user_account SET disabled_at = 1 WHERE email = 'stranger@example.com'".into())
        .await
        .unwrap();
    assert_refused(sign_in(&app, "oidc").await, 403, "disabled").await;
});

both_engines!(github_sign_in_takes_only_the_primary_verified_email, |t: TestStore| async move {
    let clock = Arc::new(t.clock.clone());
    let github = FakeGithub::start("gh-client", "gh-secret-0123456789", clock).await;
    let env = [
        ("CORTEX_OAUTH_GITHUB_CLIENT_ID", "gh-client"),
        ("CORTEX_OAUTH_GITHUB_CLIENT_SECRET", "gh-secret-0123456789"),
        ("CORTEX_OAUTH_GITHUB_URL", github.url.as_str()),
        ("CORTEX_OAUTH_GITHUB_API_URL", github.api_url.as_str()),
        ("CORTEX_OAUTH_GITHUB_AUTO_SIGNUP", "true"),
    ];
    let env = env.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
    let mut config = ApiConfig { auth_failures: cortex_api::rate_limit::Limit::OFF, ..ApiConfig::default() };
    config.dashboard.login_providers = providers_from_env(&env).unwrap();
    let app = TestApp::spawn_with(t, config).await;

    let cookie = sign_in(&app, "github").await.expect("GitHub sign-in");
    let session = whoami(&app, &cookie).await;
    assert_eq!(session["user"]["email"], "octo@example.com", "the primary email, not the secondary one");
    assert_eq!(session["role"], "viewer", "auto-signup creates viewers by default");
    let request = &github.authorize_requests()[0];
    assert_eq!(
        (request["scope"].as_str(), request["code_challenge_method"].as_str()),
        ("read:user user:email", "S256")
    );

    github.set_user(FakeUser { email_verified: false, ..FakeUser::new("777", "unverified@example.com") });
    assert_refused(sign_in(&app, "github").await, 401, "GitHub has not verified unverified@example.com").await;

    // The environment's provider is read-only through the API.
    let put = put_provider(&app, json!({"provider": "github", "client_id": "x", "client_secret": "y"})).await;
    assert_eq!(put.status(), 409);
    let listed: Value = app.get("/settings/login-providers", &app.admin).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["source"], "env");
    assert!(!listed.to_string().contains("gh-secret"), "the secret is never returned: {listed}");
});

both_engines!(login_providers_are_managed_by_admins_with_secrets_kept_secret, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let operator = app.key(Role::Operator).await;
    let body = json!({"provider": "google", "client_id": "g-client", "client_secret": "google-secret-value-123"});
    let refused =
        app.http.put(app.url("/settings/login-providers")).bearer_auth(&operator).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(app.get("/settings/login-providers", &operator).await.status(), 403);

    let invalid = put_provider(&app, json!({"provider": "oidc", "client_id": "o", "client_secret": "s"})).await;
    assert_eq!(invalid.status(), 400);
    let message = invalid.text().await.unwrap();
    assert!(message.contains("issuer_url"), "{message}");
    let no_secret = put_provider(&app, json!({"provider": "github", "client_id": "gh"})).await;
    assert_eq!(error_code(no_secret).await, "validation_failed");
    let none_role = put_provider(
        &app,
        json!({"provider": "github", "client_id": "gh", "client_secret": "s", "signup_role": "none"}),
    )
    .await;
    assert_eq!(none_role.status(), 400);

    assert_eq!(put_provider(&app, body).await.status(), 201);
    let stored = app.test.query_text("SELECT client_secret_enc FROM login_provider".into()).await.unwrap();
    assert!(stored[0].starts_with("v1:") && !stored[0].contains("google-secret"), "encrypted at rest: {stored:?}");
    let listed = app.get("/settings/login-providers", &app.admin).await.text().await.unwrap();
    assert!(!listed.contains("google-secret-value-123") && listed.contains("\"client_secret_set\":true"), "{listed}");
    assert!(listed.contains("https://accounts.google.com"), "Google's issuer by default: {listed}");

    let page = app.get("/ui/settings/login-providers", &app.admin).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("g-client") && html.contains("/auth/callback/google") && !html.contains("google-secret-value"),
        "{html}"
    );
    assert_eq!(app.get("/ui/settings/login-providers", &operator).await.status(), 403);
    let login_page = app.http.get(app.url("/ui/login?next=/ui/agents")).send().await.unwrap().text().await.unwrap();
    assert!(login_page.contains("Sign in with Google"), "{login_page}");
    assert!(login_page.contains("href=\"/auth/login/google?next=%2Fui%2Fagents\""), "{login_page}");

    // Disabled: no button, and its sign-in URL is gone.
    let disabled = put_provider(&app, json!({"provider": "google", "client_id": "g-client", "enabled": false})).await;
    assert_eq!(disabled.status(), 200);
    let providers: Value = app.http.get(app.url("/auth/providers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(providers["items"], json!([]));
    assert_eq!(browser().get(app.url("/auth/login/google")).send().await.unwrap().status(), 404);

    let deleted =
        app.http.delete(app.url("/settings/login-providers/google")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let again =
        app.http.delete(app.url("/settings/login-providers/google")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(again.status(), 404);
    let audit =
        app.test.query_text("SELECT action FROM audit_log WHERE target_type = 'login_provider'".into()).await.unwrap();
    assert_eq!(audit.len(), 3, "create, update and delete are audited: {audit:?}");
});

/// The cookies a browser keeps for one site.
#[derive(Default)]
struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn absorb(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE).iter().filter_map(|value| value.to_str().ok()) {
            let Some((name, rest)) = value.split_once('=') else { continue };
            let value = rest.split(';').next().unwrap_or_default();
            let expired =
                value.is_empty() || value.contains("expires=Thu, 01 Jan 1970") || rest.contains("01 Jan 1970");
            if expired {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }
}

/// Acts as the user at the provider: follows its redirects, signs in as `login` on its login form,
/// approves its consent form, and returns the URL it finally sends the browser to on this server.
async fn sign_in_at_provider(start: &str, back_to: &str, login: &str) -> String {
    let mut jar = Jar::default();
    let mut url = url::Url::parse(start).unwrap();
    let mut form: Option<String> = None;
    for _ in 0..20 {
        let request = match form.take() {
            Some(body) => browser()
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body),
            None => browser().get(url.clone()),
        };
        let response = request.header(COOKIE, jar.header()).send().await.unwrap();
        jar.absorb(&response);
        if response.status().is_redirection() {
            let next = url.join(&location(&response)).unwrap();
            if next.as_str().starts_with(back_to) {
                return next.to_string();
            }
            url = next;
            continue;
        }
        let status = response.status();
        let html = response.text().await.unwrap();
        assert_eq!(status, 200, "{url}: {html}");
        let action = html
            .split("<form")
            .nth(1)
            .and_then(|form| form.split("action=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no form at {url}: {html}"));
        let body = if html.contains("name=\"prompt\" value=\"login\"") {
            format!("prompt=login&login={login}&password=any-password")
        } else if html.contains("name=\"prompt\" value=\"consent\"") {
            "prompt=consent".to_owned()
        } else {
            panic!("neither a login nor a consent form at {url}: {html}");
        };
        url = url.join(&action.replace("&amp;", "&")).unwrap();
        form = Some(body);
    }
    panic!("the provider never sent the browser back");
}

both_engines!(a_real_openid_provider_signs_in_through_its_own_forms, |t: TestStore| async move {
    // The provider stamps its tokens with the real time.
    t.clock.set(chrono::Utc::now());
    let app = TestApp::spawn(t).await;
    let callback = app.url("/auth/callback/oidc");
    let provider = cortex_testkit::oidc_provider::RealOidcProvider::start(CLIENT_ID, CLIENT_SECRET, &callback).await;
    let created = put_provider(
        &app,
        json!({"provider": "oidc", "issuer_url": provider.issuer, "client_id": CLIENT_ID,
               "client_secret": CLIENT_SECRET, "auto_signup": true}),
    )
    .await;
    assert_eq!(created.status(), 201);

    let sign_in_as = async |login: &str| {
        let started = browser().get(app.url("/auth/login/oidc?next=/ui/approvals")).send().await.unwrap();
        assert_eq!(started.status(), 303);
        let state_cookie = set_cookie(&started, "cortex_oauth_state").unwrap();
        let back = sign_in_at_provider(&location(&started), &callback, login).await;
        browser().get(back).header(COOKIE, state_cookie).send().await.unwrap()
    };
    let done = sign_in_as("alice").await;
    assert_eq!(done.status(), 303, "{}", done.text().await.unwrap());
    assert_eq!(location(&done), "/ui/approvals");
    let cookie = set_cookie(&done, "cortex_session").unwrap();
    let session = whoami(&app, &cookie).await;
    assert_eq!(
        (session["user"]["email"].as_str(), session["role"].as_str()),
        (Some("alice@example.com"), Some("viewer"))
    );

    let refused = sign_in_as("unverified-bob").await;
    assert_refused(Err(refused), 401, "has not verified unverified-bob@example.com").await;
});
