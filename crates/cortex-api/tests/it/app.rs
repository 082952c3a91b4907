//! A real server on 127.0.0.1:0 over a per-test store, driven with reqwest.

use std::sync::Arc;

use cortex_api::state::AppParts;
use cortex_api::{ApiConfig, AppState, Readiness};
use cortex_core::role::Role;
use cortex_runtime::{Runtime, RuntimeConfig};
use cortex_store::users::{KeySource, NewApiKey};
use cortex_testkit::TestStore;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub admin: String,
    pub test: TestStore,
    /// The runtime behind the API (its handler runs agent turns when a test starts an engine).
    pub runtime: Arc<Runtime>,
    /// The server's SSE feeds (their read counters and running feeds).
    pub sse: cortex_api::sse_hub::SseHub,
    shutdown: CancellationToken,
}

impl TestApp {
    /// A server whose rate limits never get in the way (the limit itself has its own test).
    pub async fn spawn(test: TestStore) -> TestApp {
        let unlimited = cortex_api::rate_limit::Limit::OFF;
        let config =
            ApiConfig { api_rate: unlimited, chat_rate: unlimited, auth_failures: unlimited, ..ApiConfig::default() };
        Self::spawn_with(test, config).await
    }

    pub async fn spawn_with(test: TestStore, config: ApiConfig) -> TestApp {
        Self::spawn_with_env(test, config, Default::default()).await
    }

    /// A server whose runtime sees `env` (providers, search, SSRF exceptions) instead of nothing.
    pub async fn spawn_with_env(
        test: TestStore,
        config: ApiConfig,
        env: std::collections::BTreeMap<String, String>,
    ) -> TestApp {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = test.store.clone();
        let connections = config.connections;
        let readiness = Readiness::default();
        readiness.set_engine_alive(true);
        let shutdown = CancellationToken::new();
        let key = cortex_store::secrets::MasterKey::from_bytes([7; 32]);
        let cipher = Arc::new(cortex_store::secrets::Cipher::new(key, Vec::new()));
        let mcp = Arc::new(cortex_mcp::Pool::new(store.clock().clone(), 10, std::time::Duration::from_secs(600)));
        let runtime = Runtime::new(
            store.clone(),
            RuntimeConfig {
                data_dir: test.dir.path().to_path_buf(),
                env,
                cipher: cipher.clone(),
                mcp: mcp.clone(),
                http: reqwest::Client::new(),
                llm_retry: Default::default(),
                redactor: Default::default(),
            },
        )
        .await
        .unwrap();
        let channels = cortex_channels::supervisor::Supervisor::new(
            store.clone(),
            reqwest::Client::new(),
            (*cipher).clone(),
            Default::default(),
            cortex_core::new_id(),
        );
        tokio::spawn(channels.clone().run(shutdown.clone()));
        let state = AppState::new(AppParts {
            store: store.clone(),
            runtime: runtime.clone(),
            cipher,
            mcp,
            config,
            metrics: cortex_api::metrics::handle(),
            readiness,
            shutdown: shutdown.clone(),
            channels,
        });
        let sse = state.sse.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            cortex_api::server::serve(listener, cortex_api::router(state), connections, stop).await.unwrap();
        });
        let mut app =
            TestApp { base, http: reqwest::Client::new(), admin: String::new(), test, runtime, sse, shutdown };
        app.admin = app.key(Role::Admin).await;
        app
    }

    /// A fresh key with `role`.
    pub async fn key(&self, role: Role) -> String {
        let generated = cortex_core::api_key::generate();
        let mut tx = self.test.store.begin().await.unwrap();
        let user = tx.insert_user(&format!("{role} user"), None, role).await.unwrap();
        let key = NewApiKey::system(
            format!("{role} key"),
            generated.prefix,
            generated.hash,
            role,
            Some(user.id),
            KeySource::Api,
        );
        tx.insert_api_key(&key).await.unwrap();
        tx.commit().await.unwrap();
        generated.plaintext
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(key).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(key).json(&body).send().await.unwrap()
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> reqwest::Response {
        self.http.patch(self.url(path)).bearer_auth(key).json(&body).send().await.unwrap()
    }

    pub async fn create_agent(&self, name: &str) -> Value {
        let response = self
            .post(
                "/agents",
                &self.admin,
                serde_json::json!({"name": name, "model_config": {"provider": "openai", "model": "gpt-4o-mini"}}),
            )
            .await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Asserts the error envelope and returns its code.
pub async fn error_code(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_else(|err| panic!("{status}: body is not JSON: {err}"));
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("{status}: no error.code in {body}"));
    assert!(body["error"]["message"].is_string(), "no error.message in {body}");
    code.to_owned()
}
