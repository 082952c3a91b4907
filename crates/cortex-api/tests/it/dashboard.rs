//! Dashboard sign-in and pages (SPEC §11.1, Appendix B): password sessions resolve to the same principal
//! as API keys; cross-site and token-less cookie requests are refused; logout and logout-all end
//! sessions; failed sign-ins are throttled per address and per account; the first-run setup takes the
//! bootstrap key once; pages carry a strict Content-Security-Policy and never show a viewer an action
//! the API would refuse.

use chrono::Duration;
use cortex_core::clock::Clock as _;
use cortex_core::role::Role;
use cortex_store::users::{KeySource, NewApiKey};
use cortex_testkit::{TestStore, both_engines};
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

use crate::app::{TestApp, error_code};

pub(crate) const PASSWORD: &str = "correct horse battery";

/// A browser's view of a signed-in session.
pub(crate) struct Browser {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
    pub(crate) origin: String,
}

/// A client that shows redirects instead of following them.
pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub(crate) async fn user(app: &TestApp, email: &str, role: Role) -> uuid::Uuid {
    let hash = cortex_auth::password::hash(PASSWORD).unwrap();
    let mut tx = app.test.store.begin().await.unwrap();
    let user = tx.insert_user(&format!("{role} person"), Some(email), role).await.unwrap();
    tx.set_password_hash(user.id, &hash).await.unwrap();
    tx.commit().await.unwrap();
    user.id
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("cortex_session="))
        .map(str::to_owned)
}

async fn try_login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.http.post(app.url("/auth/login")).json(&json!({"email": email, "password": password})).send().await.unwrap()
}

pub(crate) async fn login(app: &TestApp, email: &str) -> Browser {
    let response = try_login(app, email, PASSWORD).await;
    assert_eq!(response.status(), 200, "sign-in of {email}");
    let set_cookie = session_cookie(response.headers()).expect("a session cookie");
    let body: Value = response.json().await.unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    Browser { cookie, csrf: body["csrf_token"].as_str().unwrap().to_owned(), origin: app.base.clone() }
}

impl Browser {
    pub(crate) fn get(&self, app: &TestApp, path: &str) -> reqwest::RequestBuilder {
        no_redirects().get(app.url(path)).header("cookie", &self.cookie)
    }

    /// An unsafe request as the dashboard's own page sends it: cookie, CSRF token, own origin.
    pub(crate) fn post(&self, app: &TestApp, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.post_as(app, path, body, &self.origin, &self.csrf)
    }

    /// An unsafe request with the session cookie and the given origin and token.
    pub(crate) fn post_as(
        &self,
        app: &TestApp,
        path: &str,
        body: Value,
        origin: &str,
        csrf: &str,
    ) -> reqwest::RequestBuilder {
        no_redirects()
            .post(app.url(path))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", csrf)
            .header("origin", origin)
            .json(&body)
    }
}

both_engines!(a_password_session_authenticates_like_a_key, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let user_id = user(&app, "ada@example.com", Role::Operator).await;

    let wrong = try_login(&app, "ada@example.com", "not the password").await;
    assert_eq!(wrong.status(), 401);
    assert!(session_cookie(wrong.headers()).is_none());
    let unknown = try_login(&app, "nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.status(), 401);

    let response = try_login(&app, "  ADA@example.com ", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let set_cookie = session_cookie(response.headers()).unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(set_cookie.contains(attribute), "{set_cookie} lacks {attribute}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http: no Secure attribute");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["role"], "operator");
    assert_eq!(body["user"]["id"], user_id.to_string());
    let csrf = body["csrf_token"].as_str().unwrap();
    assert!(csrf.len() >= 43, "256-bit CSRF token");

    // Only the hash of the session id is stored.
    let token = set_cookie.split(';').next().unwrap().trim_start_matches("cortex_session=");
    let stored = app.test.query_text("SELECT token_hash FROM web_session".into()).await.unwrap();
    assert_eq!(stored, [cortex_auth::token::hash(token)]);

    let browser = Browser { cookie: format!("cortex_session={token}"), csrf: csrf.into(), origin: app.base.clone() };
    let session: Value = browser.get(&app, "/auth/session").send().await.unwrap().json().await.unwrap();
    assert_eq!((session["role"].as_str(), session["csrf_token"].as_str()), (Some("operator"), Some(csrf)));
    assert_eq!(browser.get(&app, "/jobs").send().await.unwrap().status(), 200, "API reads with the cookie");
    let created = browser
        .post(
            &app,
            "/agents",
            json!({"name": "From the browser", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "an operator session creates agents");

    let page = browser.get(&app, "/ui/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("operator person") && html.contains(csrf), "the page names the user and carries the token");
    assert!(!html.contains("<script>"), "no inline script");
});

both_engines!(cross_site_and_tokenless_cookie_posts_are_refused, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "op@example.com", Role::Operator).await;
    let browser = login(&app, "op@example.com").await;
    let agent = json!({"name": "Csrf target", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}});

    let cross_site =
        browser.post_as(&app, "/agents", agent.clone(), "https://evil.example", &browser.csrf).send().await.unwrap();
    assert_eq!(cross_site.status(), 403);
    assert_eq!(error_code(cross_site).await, "csrf_failed");

    let no_token = no_redirects()
        .post(app.url("/agents"))
        .header("cookie", &browser.cookie)
        .header("origin", &browser.origin)
        .json(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 403);
    assert_eq!(error_code(no_token).await, "csrf_failed");

    let wrong_token =
        browser.post_as(&app, "/agents", agent.clone(), &browser.origin, &"x".repeat(43)).send().await.unwrap();
    assert_eq!(wrong_token.status(), 403);

    let no_origin = no_redirects()
        .post(app.url("/agents"))
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", &browser.csrf)
        .json(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), 403, "neither Origin nor Sec-Fetch-Site");
    let fetch_site = no_redirects()
        .post(app.url("/agents"))
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", &browser.csrf)
        .header("sec-fetch-site", "same-origin")
        .json(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_site.status(), 201, "Sec-Fetch-Site: same-origin with the token");

    // A cross-site sign-in form is refused too (login CSRF), and API keys need no CSRF token.
    let cross_login = app
        .http
        .post(app.url("/auth/login"))
        .header("origin", "https://evil.example")
        .json(&json!({"email": "op@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_login.status(), 403);
    let with_key = app
        .post(
            "/agents",
            &app.admin,
            json!({"name": "By key", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}}),
        )
        .await;
    assert_eq!(with_key.status(), 201);
});

both_engines!(logout_and_logout_all_end_sessions, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "ada@example.com", Role::Viewer).await;
    let laptop = login(&app, "ada@example.com").await;
    let phone = login(&app, "ada@example.com").await;

    let logout = laptop.post(&app, "/auth/logout", json!({})).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    assert!(session_cookie(logout.headers()).is_some_and(|cookie| cookie.contains("Max-Age=0")), "cookie cleared");
    assert_eq!(laptop.get(&app, "/auth/session").send().await.unwrap().status(), 401, "old id is useless");
    let page = laptop.get(&app, "/ui/jobs").send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/ui/login?next=%2Fui%2Fjobs");
    assert_eq!(phone.get(&app, "/auth/session").send().await.unwrap().status(), 200, "other session lives");

    let tablet = login(&app, "ada@example.com").await;
    let everywhere = phone.post(&app, "/auth/logout-all", json!({})).send().await.unwrap();
    assert_eq!(everywhere.status(), 204);
    for browser in [&phone, &tablet] {
        assert_eq!(browser.get(&app, "/auth/session").send().await.unwrap().status(), 401);
        assert_eq!(browser.get(&app, "/jobs").send().await.unwrap().status(), 401);
    }
    // Logging out needs the CSRF token like any other unsafe request.
    let fresh = login(&app, "ada@example.com").await;
    let forged = no_redirects()
        .post(app.url("/auth/logout"))
        .header("cookie", &fresh.cookie)
        .header("origin", &fresh.origin)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(fresh.get(&app, "/auth/session").send().await.unwrap().status(), 200);
});

both_engines!(failed_sign_ins_are_throttled_per_account_and_per_address, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "target@example.com", Role::Admin).await;
    user(&app, "other@example.com", Role::Viewer).await;
    for attempt in 0..10 {
        let response = try_login(&app, "target@example.com", &format!("guess {attempt}")).await;
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    let right = try_login(&app, "target@example.com", PASSWORD).await;
    assert_eq!(right.status(), 429, "the right password is refused while throttled");
    let retry_after: u64 = right.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(right).await, "rate_limited");
    // The same address is throttled for every account now too (10 failures from it).
    assert_eq!(try_login(&app, "other@example.com", PASSWORD).await.status(), 429);

    app.test.clock.advance(Duration::minutes(16));
    assert_eq!(try_login(&app, "target@example.com", PASSWORD).await.status(), 200, "window passed");

    // Per address: failures spread over many accounts still count against the address.
    for attempt in 0..10 {
        assert_eq!(try_login(&app, &format!("spray{attempt}@example.com"), PASSWORD).await.status(), 401);
    }
    assert_eq!(try_login(&app, "other@example.com", PASSWORD).await.status(), 429);
});

both_engines!(a_viewer_cannot_reach_operator_actions, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    user(&app, "operator@example.com", Role::Operator).await;
    let agent = app.create_agent("Worker").await;
    let agent_id = agent["id"].as_str().unwrap();
    let job: Value = app
        .post(&format!("/agents/{agent_id}/jobs"), &app.admin, json!({"prompt": "do it"}))
        .await
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_str().unwrap();
    let viewer = login(&app, "viewer@example.com").await;
    let operator = login(&app, "operator@example.com").await;

    // The page offers the action to the operator only.
    let cancel = format!("hx-post=\"/jobs/{job_id}/cancel\"");
    let viewer_page = viewer.get(&app, &format!("/ui/jobs/{job_id}")).send().await.unwrap().text().await.unwrap();
    assert!(!viewer_page.contains(&cancel), "viewer sees no cancel button");
    assert!(viewer_page.contains("need the operator role"));
    let operator_page = operator.get(&app, &format!("/ui/jobs/{job_id}")).send().await.unwrap().text().await.unwrap();
    assert!(operator_page.contains(&cancel), "operator sees the cancel button");

    // A crafted request with a valid session, token and origin is still refused by the route's guard.
    for (path, body) in [
        (format!("/jobs/{job_id}/cancel"), json!({})),
        ("/agents".to_owned(), json!({"name": "Nope", "model_config": {"provider": "openai", "model": "m"}})),
        (format!("/agents/{agent_id}/chat"), json!({"text": "hi"})),
    ] {
        let response = viewer.post(&app, &path, body).send().await.unwrap();
        assert_eq!(response.status(), 403, "viewer POST {path}");
        assert_eq!(error_code(response).await, "forbidden");
    }
    let cancelled = operator.post(&app, &format!("/jobs/{job_id}/cancel"), json!({})).send().await.unwrap();
    assert_eq!(cancelled.status(), 202, "the operator may");
});

both_engines!(the_first_run_setup_takes_the_bootstrap_key_once, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    let bootstrap = cortex_core::api_key::generate();
    let mut tx = app.test.store.begin().await.unwrap();
    let owner = tx.insert_user("admin", None, Role::Admin).await.unwrap();
    tx.insert_api_key(&NewApiKey::system(
        "bootstrap".into(),
        bootstrap.prefix.clone(),
        bootstrap.hash.clone(),
        Role::Admin,
        Some(owner.id),
        KeySource::Bootstrap,
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let client = no_redirects();
    let login_page = client.get(app.url("/ui/login")).send().await.unwrap().text().await.unwrap();
    assert!(login_page.contains("href=\"/ui/setup\""), "a fresh install offers the setup");

    let form = |key: &str| {
        [
            ("bootstrap_key", key.to_owned()),
            ("display_name", "Grace".into()),
            ("email", "grace@example.com".into()),
            ("password", PASSWORD.into()),
        ]
    };
    let submit = |key: String| {
        let client = client.clone();
        let url = app.url("/ui/setup");
        let origin = app.base.clone();
        async move { client.post(url).header("origin", origin).form(&form(&key)).send().await.unwrap() }
    };
    // An ordinary admin key (not the bootstrap one) is not accepted.
    let wrong = submit(app.admin.clone()).await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("not the bootstrap admin key"));
    let cross_site = client
        .post(app.url("/ui/setup"))
        .header("origin", "https://evil.example")
        .form(&form(&bootstrap.plaintext))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);

    let done = submit(bootstrap.plaintext.clone()).await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/ui/");
    let cookie = session_cookie(done.headers()).unwrap().split(';').next().unwrap().to_owned();
    let session: Value =
        client.get(app.url("/auth/session")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (session["role"].as_str(), session["user"]["email"].as_str()),
        (Some("admin"), Some("grace@example.com"))
    );
    assert_eq!(try_login(&app, "grace@example.com", PASSWORD).await.status(), 200);

    let again = submit(bootstrap.plaintext.clone()).await;
    assert_eq!(again.status(), 409, "the key is accepted once");
    let page = client.get(app.url("/ui/setup")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Setup is complete"));
});

both_engines!(pages_render_lists_filters_and_errors_in_words, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "ada@example.com", Role::Viewer).await;
    let browser = login(&app, "ada@example.com").await;

    let empty = browser.get(&app, "/ui/agents").send().await.unwrap().text().await.unwrap();
    assert!(empty.contains("No agents yet"), "empty state says what to do");
    let agent = app.create_agent("Scout <b>").await;
    let agent_id = agent["id"].as_str().unwrap();
    for n in 0..3 {
        app.post(&format!("/agents/{agent_id}/jobs"), &app.admin, json!({"prompt": format!("task {n}")})).await;
    }
    let agents = browser.get(&app, "/ui/agents").send().await.unwrap().text().await.unwrap();
    assert!(agents.contains("Scout &#60;b&#62;") || agents.contains("Scout &lt;b&gt;"), "names are escaped");
    let detail = browser.get(&app, &format!("/ui/agents/{agent_id}")).send().await.unwrap();
    assert_eq!(detail.status(), 200);
    let jobs = browser.get(&app, &format!("/ui/jobs?status=scheduled&agent_id={agent_id}")).send().await.unwrap();
    assert_eq!(jobs.status(), 200);
    let jobs = jobs.text().await.unwrap();
    assert_eq!(jobs.matches("<tr>").count(), 4, "header and three jobs: {jobs}");
    let none = browser.get(&app, "/ui/jobs?status=completed").send().await.unwrap().text().await.unwrap();
    assert!(none.contains("No jobs match these filters"));
    let bad = browser.get(&app, "/ui/jobs?status=bogus").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("unknown status `bogus`"));
    let missing = browser.get(&app, &format!("/ui/jobs/{}", uuid::Uuid::now_v7())).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let asset = no_redirects().get(app.url("/ui/static/htmx-2.0.11.min.js")).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    assert!(asset.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(no_redirects().get(app.url("/ui/static/nope.js")).send().await.unwrap().status(), 404);
    let root = no_redirects().get(app.url("/")).send().await.unwrap();
    assert_eq!((root.status().as_u16(), root.headers()["location"].to_str().unwrap()), (303, "/ui/"));
});

both_engines!(approvals_show_the_exact_call_and_only_approvers_decide, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "operator@example.com", Role::Operator).await;
    user(&app, "approver@example.com", Role::Approver).await;
    let operator = login(&app, "operator@example.com").await;
    let approver = login(&app, "approver@example.com").await;
    let empty = operator.get(&app, "/ui/approvals").send().await.unwrap().text().await.unwrap();
    assert!(empty.contains("Nothing waits for a decision"));

    let agent = app.create_agent("Payer").await;
    let job: Value = app
        .post(&format!("/agents/{}/jobs", agent["id"].as_str().unwrap()), &app.admin, json!({"prompt": "pay"}))
        .await
        .json()
        .await
        .unwrap();
    let mut tx = app.test.store.begin().await.unwrap();
    let (approval, _) = tx
        .insert_approval(&cortex_store::approvals::NewApproval {
            job_id: job["id"].as_str().unwrap().parse().unwrap(),
            tool_call_id: None,
            agent_id: agent["id"].as_str().unwrap().parse().unwrap(),
            action_type: "tool",
            action_summary: "http_request POST https://pay.example/transfer".into(),
            action_detail: json!({"tool": "http_request", "arguments": {"method": "POST", "amount_eur": 4242}}),
            tool_ref: Some("http_request".into()),
            args_hash: Some("abc123".into()),
            risk: cortex_core::approval::RiskTier::P1,
            expires_at: app.test.clock.now() + Duration::hours(24),
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let id = approval.id;

    let queue = operator.get(&app, "/ui/approvals").send().await.unwrap().text().await.unwrap();
    assert!(
        queue.contains("http_request POST https://pay.example/transfer") && queue.contains("in 24 h 0 min"),
        "{queue}"
    );
    let decide = format!("hx-post=\"/approvals/{id}/decide\"");
    let as_operator = operator.get(&app, &format!("/ui/approvals/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(as_operator.contains("amount_eur") && as_operator.contains("4242"), "the exact arguments are shown");
    assert!(!as_operator.contains(&decide) && as_operator.contains("need the approver role"));
    let refused =
        operator.post(&app, &format!("/approvals/{id}/decide"), json!({"decision": "approve"})).send().await.unwrap();
    assert_eq!(refused.status(), 403);

    let as_approver = approver.get(&app, &format!("/ui/approvals/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(as_approver.contains(&decide));
    // What htmx's JSON encoding sends for the form: the clicked button's decision and the (empty) reason.
    let decided = approver
        .post(&app, &format!("/approvals/{id}/decide"), json!({"decision": "approve", "reason": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200, "{}", decided.text().await.unwrap());
    let after = approver.get(&app, &format!("/ui/approvals/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(after.contains("s-approved") && after.contains("dashboard") && after.contains("chain intact"), "{after}");
    assert!(!after.contains(&decide), "a decided request offers no decision");
    let pending = approver.get(&app, "/ui/approvals").send().await.unwrap().text().await.unwrap();
    assert!(pending.contains("Nothing waits"));
    let all = approver.get(&app, "/ui/approvals?status=all").send().await.unwrap().text().await.unwrap();
    assert!(all.contains(&id.to_string()));
});

both_engines!(agents_are_created_chatted_with_and_given_tools_from_the_dashboard, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    user(&app, "operator@example.com", Role::Operator).await;
    let viewer = login(&app, "viewer@example.com").await;
    let operator = login(&app, "operator@example.com").await;

    // The create form offers the catalogue's providers and tools; only operators reach it.
    let form = operator.get(&app, "/ui/agents/new").send().await.unwrap();
    assert_eq!(form.status(), 200);
    let form = form.text().await.unwrap();
    assert!(form.contains("<option value=\"openai\">") && form.contains("value=\"echo\""), "pickers are filled");
    assert!(form.contains("name=\"model_config.provider\"") && form.contains("name=\"tools[]\""));
    assert_eq!(viewer.get(&app, "/ui/agents/new").send().await.unwrap().status(), 403);
    let list = viewer.get(&app, "/ui/agents").send().await.unwrap().text().await.unwrap();
    assert!(!list.contains("/ui/agents/new\""), "no create link for a viewer");

    // What the form's JSON encoding sends (dotted names nest, `tools[]` is an array).
    let created = operator
        .post(
            &app,
            "/agents",
            json!({"name": "Helper", "model_config": {"provider": "openai", "model": "gpt-4o-mini"}, "tools": ["echo"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let agent: Value = created.json().await.unwrap();
    let id = agent["id"].as_str().unwrap();

    let page = operator.get(&app, &format!("/ui/agents/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("hx-post=\"/agents/{id}/chat\"")) && page.contains("data-chat=\"transcript\""));
    assert!(page.contains("<code>echo</code>"), "the listed tool has a policy");
    assert!(page.contains(&format!("hx-put=\"/agents/{id}/tools/\"")), "other tools can be allowed");
    let as_viewer = viewer.get(&app, &format!("/ui/agents/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(!as_viewer.contains("/chat\"") && as_viewer.contains("Chatting needs the operator role"));

    // A policy change as the form sends it (`data-bool` makes `enabled` a boolean).
    let put = no_redirects()
        .put(app.url(&format!("/agents/{id}/tools/echo")))
        .header("cookie", &operator.cookie)
        .header("x-csrf-token", &operator.csrf)
        .header("origin", &operator.origin)
        .json(&json!({"enabled": true, "approval": "always"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let page = operator.get(&app, &format!("/ui/agents/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<option value=\"always\" selected>"), "the page shows the new rule");

    // The chat panel's request: 202 with the job to follow; the viewer's crafted one is refused.
    let chat = operator.post(&app, &format!("/agents/{id}/chat"), json!({"text": "hello"})).send().await.unwrap();
    assert_eq!(chat.status(), 202);
    let chat: Value = chat.json().await.unwrap();
    assert!(chat["job_id"].is_string() && chat["session_id"].is_string());
    let events =
        operator.get(&app, &format!("/jobs/{}/events", chat["job_id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(events.status(), 200, "the session cookie opens the job's event stream");
    assert!(events.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    drop(events);
    let refused = viewer.post(&app, &format!("/agents/{id}/chat"), json!({"text": "hello"})).send().await.unwrap();
    assert_eq!(refused.status(), 403);
});

both_engines!(memory_and_channel_screens_show_state_and_offer_only_allowed_actions, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    user(&app, "operator@example.com", Role::Operator).await;
    let viewer = login(&app, "viewer@example.com").await;
    let operator = login(&app, "operator@example.com").await;
    let page = |who: &Browser, path: &str| who.get(&app, path).send();

    // No agent: the explorer says how memories come to exist; no channel: how to add one.
    let memory = page(&viewer, "/ui/memory").await.unwrap().text().await.unwrap();
    assert!(memory.contains("No agents yet, so no memories"), "{memory}");
    let channels = page(&viewer, "/ui/channels").await.unwrap().text().await.unwrap();
    assert!(channels.contains("No chat channels yet") && !channels.contains("hx-post=\"/channels\""), "{channels}");

    let agent = app.create_agent("Keeper").await;
    let agent_id = agent["id"].as_str().unwrap();
    let empty = page(&operator, "/ui/memory").await.unwrap().text().await.unwrap();
    assert!(empty.contains("Keeper remembers nothing yet") && empty.contains("or add one below"), "{empty}");
    assert!(empty.contains(&format!("hx-post=\"/agents/{agent_id}/memory\"")), "operators get the add form");
    let stored: Value = app
        .post(
            &format!("/agents/{agent_id}/memory"),
            &app.admin,
            json!({"content": "The deploy window is Tuesday <b>morning</b>.", "type": "fact", "tags": ["ops"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let memory_id = stored["id"].as_str().unwrap();

    let listed = page(&viewer, &format!("/ui/memory?agent={agent_id}")).await.unwrap().text().await.unwrap();
    assert!(listed.contains("Tuesday &#60;b&#62;morning") || listed.contains("Tuesday &lt;b&gt;morning"), "{listed}");
    assert!(!listed.contains("hx-post=\"/agents/"), "a viewer gets no add form");
    let search = page(&viewer, &format!("/ui/memory?agent={agent_id}&q=deploy+window")).await.unwrap();
    assert_eq!(search.status(), 200);
    let search = search.text().await.unwrap();
    assert!(search.contains("Similarity") && search.contains("<strong>"), "score parts shown: {search}");
    let filtered = page(&viewer, &format!("/ui/memory?agent={agent_id}&type=event")).await.unwrap();
    assert!(filtered.text().await.unwrap().contains("Nothing in Keeper's memory matches"));
    let bad = page(&viewer, &format!("/ui/memory?agent={agent_id}&type=gossip")).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("unknown memory type `gossip`"));
    let missing = page(&viewer, &format!("/ui/memory/{agent_id}/{}", uuid::Uuid::now_v7())).await.unwrap();
    assert_eq!(missing.status(), 404);

    let item_path = format!("/ui/memory/{agent_id}/{memory_id}");
    let item = page(&viewer, &item_path).await.unwrap().text().await.unwrap();
    assert!(item.contains("Tuesday") && !item.contains("hx-patch") && !item.contains("hx-delete"), "{item}");
    let item = page(&operator, &item_path).await.unwrap().text().await.unwrap();
    assert!(item.contains("hx-patch") && item.contains("hx-delete"), "operators may edit and delete");

    // A viewer crafting the requests the operator's page sends is refused by the API's guards.
    let refused = viewer
        .post(&app, &format!("/agents/{agent_id}/memory"), json!({"content": "Sneaky addition by a viewer."}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused = viewer
        .post(&app, "/channels", json!({"type": "telegram", "name": "x", "config": {"bot_token": "1:a"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let operator_channel = operator
        .post(&app, "/channels", json!({"type": "telegram", "name": "x", "config": {"bot_token": "1:a"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(operator_channel.status(), 403, "adding a bot needs an admin");
    assert_eq!(page(&viewer, &format!("/ui/channels/{}", uuid::Uuid::now_v7())).await.unwrap().status(), 404);
});

both_engines!(job_detail_edit_agent_and_audit_pages, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    user(&app, "operator@example.com", Role::Operator).await;
    user(&app, "admin@example.com", Role::Admin).await;
    let viewer = login(&app, "viewer@example.com").await;
    let operator = login(&app, "operator@example.com").await;
    let admin = login(&app, "admin@example.com").await;
    let agent = app.create_agent("Editor").await;
    let agent_id = agent["id"].as_str().unwrap();
    let job: Value = app
        .post(&format!("/agents/{agent_id}/jobs"), &app.admin, json!({"prompt": "do it"}))
        .await
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_str().unwrap();

    // A job not yet run: its steps so far, empty tool calls in words, and a live region.
    let page = viewer.get(&app, &format!("/ui/jobs/{job_id}")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("new → scheduled"), "the first step: {page}");
    assert!(page.contains("The model called no tool in this job."), "{page}");
    assert!(
        page.contains(&format!("data-live=\"/jobs/{job_id}/events\"")) && page.contains("data-live-reload"),
        "{page}"
    );

    // Editing is for operators: the page and the PATCH it sends.
    let edit = format!("/ui/agents/{agent_id}/edit");
    let refused = viewer.get(&app, &edit).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("operator"), "refusal in words");
    let form = operator.get(&app, &edit).send().await.unwrap().text().await.unwrap();
    assert!(form.contains(&format!("hx-patch=\"/agents/{agent_id}\"")) && form.contains("data-json"), "{form}");
    assert!(
        form.contains("name=\"memory.enabled\" data-bool") && form.contains("name=\"memory.auto_extract\" data-bool"),
        "the memory switches are on the form: {form}"
    );
    let agent_page = viewer.get(&app, &format!("/ui/agents/{agent_id}")).send().await.unwrap().text().await.unwrap();
    assert!(!agent_page.contains(&edit), "a viewer is not offered the edit link");

    // The audit log is for admins, newest first, filterable, with an empty state in words.
    assert_eq!(operator.get(&app, "/ui/audit").send().await.unwrap().status(), 403);
    let audit = admin.get(&app, "/ui/audit").send().await.unwrap().text().await.unwrap();
    assert!(audit.contains("agent.create"), "{audit}");
    let filtered = admin.get(&app, "/ui/audit?action=agent.create").send().await.unwrap().text().await.unwrap();
    assert_eq!(filtered.matches("<code>agent.create</code>").count(), 1, "{filtered}");
    let none = admin.get(&app, "/ui/audit?action=nothing.here").send().await.unwrap().text().await.unwrap();
    assert!(none.contains("No entry matches these filters"), "{none}");
    let bad = admin.get(&app, "/ui/audit?cursor=garbage").send().await.unwrap();
    assert_eq!(bad.status(), 400);

    // Lists carry live regions that start at the page's event.
    let jobs = viewer.get(&app, "/ui/jobs").send().await.unwrap().text().await.unwrap();
    assert!(jobs.contains("data-live=\"/jobs/stream\""), "{jobs}");
    let approvals = viewer.get(&app, "/ui/approvals").send().await.unwrap().text().await.unwrap();
    assert!(approvals.contains("data-live=\"/approvals/stream\""), "{approvals}");
});

both_engines!(api_keys_page_lists_own_keys_and_offers_roles_up_to_ones_own, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "operator@example.com", Role::Operator).await;
    user(&app, "other@example.com", Role::Operator).await;
    let operator = login(&app, "operator@example.com").await;
    let other = login(&app, "other@example.com").await;

    let empty = operator.get(&app, "/ui/settings/api-keys").send().await.unwrap().text().await.unwrap();
    assert!(empty.contains("No API keys yet"), "{empty}");
    assert!(empty.contains("<option value=\"operator\">") && !empty.contains("<option value=\"admin\">"), "{empty}");
    assert!(!empty.contains("<option value=\"none\">"), "{empty}");
    let created: Value = operator
        .post(&app, "/api-keys", json!({"name": "deploy <script>", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    let page = operator.get(&app, "/ui/settings/api-keys").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("deploy &#60;script&#62;") || page.contains("deploy &lt;script&gt;"), "{page}");
    assert!(page.contains(&format!("hx-delete=\"/api-keys/{key_id}\"")), "its maker may revoke it");
    assert!(!page.contains(secret), "the secret is never on a page");
    let theirs = other.get(&app, "/ui/settings/api-keys").send().await.unwrap().text().await.unwrap();
    assert!(!theirs.contains(key_id), "another operator does not see it");
    let refused = other.post_as(&app, &format!("/api-keys/{key_id}"), json!({}), &other.origin, &other.csrf);
    assert_eq!(refused.send().await.unwrap().status(), 405, "revocation is a DELETE");
    let revoke = no_redirects()
        .delete(app.url(&format!("/api-keys/{key_id}")))
        .header("cookie", &other.cookie)
        .header("x-csrf-token", &other.csrf)
        .header("origin", &other.origin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 403, "nor revoke it by crafting the request");
});

both_engines!(mcp_page_says_how_to_add_a_server_and_only_admins_get_the_forms, |t: TestStore| async move {
    let app = TestApp::spawn(t).await;
    user(&app, "viewer@example.com", Role::Viewer).await;
    user(&app, "admin@example.com", Role::Admin).await;
    let viewer = login(&app, "viewer@example.com").await;
    let admin = login(&app, "admin@example.com").await;
    let seen = viewer.get(&app, "/ui/mcp").send().await.unwrap().text().await.unwrap();
    assert!(seen.contains("No MCP servers yet") && seen.contains("An administrator can add one"), "{seen}");
    assert!(!seen.contains("hx-post=\"/mcp-servers\""), "a viewer gets no add form");
    let admin_page = admin.get(&app, "/ui/mcp").send().await.unwrap().text().await.unwrap();
    assert!(admin_page.contains("hx-post=\"/mcp-servers\""), "{admin_page}");
    let refused = viewer
        .post(&app, "/mcp-servers", json!({"name": "x", "transport": "http", "url": "http://127.0.0.1:9/mcp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "crafting the admin's request does not help a viewer");
    assert_eq!(viewer.get(&app, "/ui/mcp?cursor=garbage").send().await.unwrap().status(), 400);
});
