//! The harness: a real job engine with the runtime's handler, against the fake LLM and in-process peers.
//! Waiting is on store notifications, never on sleeps; time moves only through the manual clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use cortex_core::agent::{AccessMode, AgentStatus, ModelConfig, ModelRef, ResourceLimits};
use cortex_core::approval::{ApprovalMode, RiskTier};
use cortex_core::event::EventType;
use cortex_core::job::{JobKind, JobStatus};
use cortex_jobs::{EngineConfig, JobEngine};
use cortex_llm::RetryPolicy;
use cortex_runtime::{Runtime, RuntimeConfig};
use cortex_store::Store;
use cortex_store::agents::{Agent, AgentDefinition};
use cortex_store::events::{Event, EventScope};
use cortex_store::jobs::{Job, NewJob};
use cortex_store::secrets::{Cipher, MasterKey};
use cortex_store::tools::{ToolPolicy, WebhookToolRecord};
use cortex_testkit::TestStore;
use cortex_testkit::fake_llm::FakeLlm;
pub use cortex_testkit::jobs::{
    insert_agent, insert_job, insert_webhook_tool, task_job, wait_for_job as wait_for, wait_for_status as wait_status,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A reqwest client on the ring provider.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The environment a runtime under test sees: both providers on the fake, loopback allowed for webhooks.
pub fn env_for(llm: &FakeLlm) -> BTreeMap<String, String> {
    [
        ("OPENAI_API_KEY", "sk-test-openai".to_owned()),
        ("OPENAI_BASE_URL", llm.openai_base_url()),
        ("ANTHROPIC_API_KEY", "sk-test-anthropic".to_owned()),
        ("ANTHROPIC_BASE_URL", llm.anthropic_base_url()),
        ("CORTEX_SSRF_ALLOW", "127.0.0.1".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Retries that do not slow tests down (no jitter, 1 ms base; `Retry-After` still honoured up to 30 s).
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_in_call_retries: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_secs(30),
        jitter: 0.0,
    }
}

pub fn cipher() -> Arc<Cipher> {
    Arc::new(Cipher::new(MasterKey::from_bytes([7; 32]), Vec::new()))
}

pub async fn runtime_with_env(test: &TestStore, store: &Store, env: BTreeMap<String, String>) -> Arc<Runtime> {
    Runtime::new(store.clone(), runtime_config(test.dir.path(), store, env)).await.unwrap()
}

/// The runtime configuration tests use: fake-friendly retries, a fixed master key, a fresh MCP pool.
pub fn runtime_config(data_dir: &std::path::Path, store: &Store, env: BTreeMap<String, String>) -> RuntimeConfig {
    RuntimeConfig {
        data_dir: data_dir.to_owned(),
        env,
        cipher: cipher(),
        mcp: Arc::new(cortex_mcp::Pool::new(store.clock().clone(), 10, Duration::from_secs(600))),
        http: http(),
        llm_retry: fast_retry(),
        redactor: Default::default(),
    }
}

/// Engine settings for tests: the manual clock moves in big steps, so workers never look dead on their own.
pub fn engine_config(concurrency: usize) -> EngineConfig {
    EngineConfig {
        concurrency,
        worker_dead_after: Duration::from_secs(24 * 3600),
        ..EngineConfig::with_name("runtime-test")
    }
}

/// A running job engine with the runtime's handler.
pub struct Engine {
    stop: CancellationToken,
    done: tokio::task::JoinHandle<Result<(), cortex_store::StoreError>>,
}

impl Engine {
    pub fn start(store: &Store, runtime: &Runtime, concurrency: usize) -> Engine {
        let handler = runtime.handler();
        let engine = JobEngine::new(store.clone(), engine_config(concurrency))
            .with_handler(JobKind::Chat, handler.clone())
            .with_handler(JobKind::Task, handler);
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let done = tokio::spawn(engine.run(async move { signal.cancelled().await }));
        Engine { stop, done }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.done.await.unwrap().unwrap();
    }
}

/// A job engine with its own store connections and runtime, in a thread of its own, that can be killed:
/// the crash drops that runtime (every task of it stops at once, nothing is written on the way out), as
/// `kill -9` would.
pub struct Doomed {
    crash: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Doomed {
    /// Starts a "process" on the test's database; it claims what is already queued.
    pub fn start(test: &TestStore, env: BTreeMap<String, String>) -> Doomed {
        let (crash, crashed) = std::sync::mpsc::channel::<()>();
        let (database, clock, data_dir) = (test.config.clone(), test.clock.clone(), test.dir.path().to_owned());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let store = Store::open_shared(&database, Arc::new(clock)).await.unwrap();
                let agents = Runtime::new(store.clone(), runtime_config(&data_dir, &store, env)).await.unwrap();
                let handler = agents.handler();
                let engine = JobEngine::new(store, engine_config(2))
                    .with_handler(JobKind::Chat, handler.clone())
                    .with_handler(JobKind::Task, handler);
                tokio::spawn(engine.run(std::future::pending::<()>()));
            });
            let _ = crashed.recv();
            runtime.shutdown_background();
        });
        Doomed { crash, thread }
    }

    pub fn kill(self) {
        let _ = self.crash.send(());
        self.thread.join().unwrap();
    }
}

/// One test's world: store, fake LLM, runtime and a running engine.
pub struct World {
    pub test: TestStore,
    pub llm: FakeLlm,
    pub runtime: Arc<Runtime>,
    pub engine: Engine,
}

impl World {
    pub async fn new(test: TestStore) -> World {
        Self::with_concurrency(test, 4).await
    }

    pub async fn with_concurrency(test: TestStore, concurrency: usize) -> World {
        Self::with_settings(test, concurrency, &[]).await
    }

    /// A world whose runtime also sees `extra` environment settings (limits, allow-lists).
    pub async fn with_settings(test: TestStore, concurrency: usize, extra: &[(&str, &str)]) -> World {
        let llm = FakeLlm::start().await;
        let store = test.store.clone();
        let mut env = env_for(&llm);
        env.extend(extra.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
        let runtime = runtime_with_env(&test, &store, env).await;
        let engine = Engine::start(&store, &runtime, concurrency);
        World { test, llm, runtime, engine }
    }

    pub fn store(&self) -> &Store {
        &self.test.store
    }

    pub async fn finish(self) {
        self.engine.shutdown().await;
    }
}

/// An agent definition on the OpenAI provider with sensible test defaults.
pub fn definition(model: &str) -> AgentDefinition {
    let id = Uuid::now_v7().simple().to_string();
    AgentDefinition {
        name: format!("agent-{id}"),
        slug: format!("agent-{id}"),
        role: String::new(),
        description: String::new(),
        system_prompt: "You are a careful assistant.".into(),
        model_config: ModelConfig {
            provider: "openai".into(),
            model: model.into(),
            temperature: None,
            max_tokens: Some(256),
            fallbacks: vec![],
            extraction_model: None,
            requires_approval: false,
            credential: None,
        },
        resource_limits: ResourceLimits::default(),
        access_mode: AccessMode::BoundChats,
        skills: vec![],
        subagents: vec![],
        memory: Default::default(),
        status: AgentStatus::Active,
    }
}

pub async fn create_agent(store: &Store, def: AgentDefinition) -> Agent {
    let id = insert_agent(store, &def).await;
    store.get_agent_by_id(id).await.unwrap()
}

pub fn fallback(provider: &str, model: &str) -> ModelRef {
    ModelRef { provider: provider.into(), model: model.into() }
}

/// Enables `tool_ref` for the agent with the given approval mode.
pub async fn allow_tool(store: &Store, agent_id: Uuid, tool_ref: &str, approval: ApprovalMode, risk: Option<RiskTier>) {
    let policy = ToolPolicy { approval, risk, ..ToolPolicy::enabled_by_risk(agent_id, tool_ref) };
    let mut tx = store.begin().await.unwrap();
    tx.upsert_tool_policy(&policy).await.unwrap();
    tx.commit().await.unwrap();
}

/// A task job with `prompt`.
pub async fn task(store: &Store, agent_id: Uuid, prompt: &str) -> Job {
    task_with_payload(store, agent_id, json!({"prompt": prompt})).await
}

/// A task job with an explicit payload (e.g. input marked as coming from an untrusted sender).
pub async fn task_with_payload(store: &Store, agent_id: Uuid, payload: Value) -> Job {
    insert_job(store, &task_job(agent_id, payload)).await
}

/// A chat job in `session` (a new one when `None`), its user message stored as the API does.
pub async fn chat(store: &Store, agent_id: Uuid, session: Option<Uuid>, text: &str) -> Job {
    let mut tx = store.begin().await.unwrap();
    let session_id = match session {
        Some(id) => id,
        None => tx.insert_session(agent_id, None, "rest").await.unwrap().id,
    };
    let new = NewJob { session_id: Some(session_id), kind: JobKind::Chat, ..task_job(agent_id, json!({})) };
    let (job, _) = tx.insert_job(&new).await.unwrap();
    tx.append_message(session_id, "user", text, Some(job.id), None).await.unwrap();
    tx.commit().await.unwrap();
    job
}

/// Waits for a job to stop running for good (completed, failed, timed out, waiting for a human).
pub async fn wait_settled(store: &Store, job_id: Uuid) -> Job {
    wait_for(store, job_id, "a resting state", |job| {
        matches!(
            job.status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::WaitingForApproval | JobStatus::DeadLetter
        )
    })
    .await
}

/// Every event of a job, oldest first.
pub async fn events(store: &Store, job_id: Uuid) -> Vec<Event> {
    store.events_after(EventScope::Job(job_id), 0, 10_000).await.unwrap()
}

pub fn of_type(events: &[Event], event_type: EventType) -> Vec<&Event> {
    events.iter().filter(|event| event.event_type == event_type).collect()
}

/// An HTTP endpoint counting its hits and answering with a fixed JSON body (a webhook target with side
/// effects, or a page carrying an injection). It remembers each request's `Idempotency-Key`.
#[derive(Clone)]
pub struct CountingServer {
    pub url: String,
    hits: Arc<AtomicUsize>,
    keys: Arc<Mutex<Vec<Option<String>>>>,
}

/// What the counting server's handler shares.
type Counted = (Arc<AtomicUsize>, Arc<Mutex<Vec<Option<String>>>>, Value);

impl CountingServer {
    pub async fn start(body: Value) -> CountingServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let state: Counted = (hits.clone(), keys.clone(), body);
        let app = Router::new().fallback(|State((hits, keys, body)): State<Counted>, headers: HeaderMap| async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let key = headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::to_owned);
            keys.lock().unwrap().push(key);
            axum::Json(body)
        });
        let app = app.with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        CountingServer { url, hits, keys }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The `Idempotency-Key` of every request, in arrival order.
    pub fn idempotency_keys(&self) -> Vec<Option<String>> {
        self.keys.lock().unwrap().clone()
    }
}

/// Registers a shared webhook tool `webhook:<name>` posting to `url` and enables it for the agent.
pub async fn webhook_tool(store: &Store, agent_id: Uuid, name: &str, url: &str, approval: ApprovalMode) {
    let schema = json!({"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]});
    let record = WebhookToolRecord {
        description: "Records an order.".into(),
        ..cortex_testkit::jobs::webhook_tool(name, format!("{url}/hook"), schema)
    };
    insert_webhook_tool(store, &record).await;
    allow_tool(store, agent_id, &format!("webhook:{name}"), approval, None).await;
}
