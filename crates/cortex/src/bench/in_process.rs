//! The whole control plane in this process for a benchmark: store on the scratch database, runtime, an
//! optional job engine and the HTTP API on loopback, reached with an admin key. Shared by the scenarios
//! that measure through HTTP (`chat`, `ui`) so they measure the same server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cortex_api::state::AppParts;
use cortex_api::{ApiConfig, AppState, Readiness};
use cortex_core::clock::SystemClock;
use cortex_core::job::JobKind;
use cortex_core::role::Role;
use cortex_jobs::{EngineConfig, JobEngine};
use cortex_runtime::{Runtime, RuntimeConfig};
use cortex_store::Store;
use cortex_store::secrets::{Cipher, MasterKey};
use cortex_store::users::{KeySource, NewApiKey};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Scratch;

/// A running in-process server.
pub(crate) struct InProcess {
    pub(crate) store: Store,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    /// An admin API key.
    pub(crate) key: String,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    engine: Option<JoinHandle<anyhow::Result<()>>>,
    mcp: Arc<cortex_mcp::Pool>,
}

impl InProcess {
    /// Starts the server on the scratch database with the runtime seeing `env`; with `engine_slots`, a
    /// job engine runs chat jobs with that many slots. Rate limits are off: the benchmark is the load.
    pub(crate) async fn start(
        scratch: &Scratch,
        env: BTreeMap<String, String>,
        engine_slots: Option<usize>,
    ) -> anyhow::Result<InProcess> {
        let store =
            Store::open(&scratch.database, Arc::new(SystemClock)).await.context("opening the scratch database")?;
        store.migrate().await.context("migrating the scratch database")?;
        let cipher = Arc::new(Cipher::new(MasterKey::from_bytes(rand::random()), Vec::new()));
        let mcp = Arc::new(cortex_mcp::Pool::new(store.clock().clone(), 10, Duration::from_secs(600)));
        let http = reqwest::Client::new();
        let runtime = Runtime::new(
            store.clone(),
            RuntimeConfig {
                data_dir: scratch.dir.clone(),
                env,
                cipher: cipher.clone(),
                mcp: mcp.clone(),
                http: http.clone(),
                llm_retry: cortex_llm::RetryPolicy::default(),
                redactor: Default::default(),
            },
        )
        .await
        .context("starting the runtime")?;
        let key = admin_key(&store).await?;
        let stop = CancellationToken::new();
        let engine = engine_slots.map(|slots| {
            let config =
                EngineConfig { concurrency: slots, ..EngineConfig::with_name(format!("bench:{}", std::process::id())) };
            let engine = JobEngine::new(store.clone(), config).with_handler(JobKind::Chat, runtime.handler());
            let stopped = stop.clone().cancelled_owned();
            tokio::spawn(async move { engine.run(stopped).await.map_err(anyhow::Error::from) })
        });
        let readiness = Readiness::default();
        readiness.set_engine_alive(true);
        let unlimited = cortex_api::rate_limit::Limit::OFF;
        let channels = crate::channels::supervisor(&store, &cipher, http)?;
        let state = AppState::new(AppParts {
            store: store.clone(),
            runtime,
            cipher,
            mcp: mcp.clone(),
            channels,
            config: ApiConfig { api_rate: unlimited, chat_rate: unlimited, ..ApiConfig::default() },
            metrics: cortex_api::metrics::handle(),
            readiness,
            shutdown: stop.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let limits = cortex_api::server::ConnectionLimits::default();
        tokio::spawn(cortex_api::metrics::keep_drained(cortex_api::metrics::handle(), stop.clone()));
        let server = tokio::spawn(cortex_api::server::serve(listener, cortex_api::router(state), limits, stop.clone()));
        Ok(InProcess { store, base, key, stop, server, engine, mcp })
    }

    /// Stops the server (and engine) and closes the store.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        if let Some(engine) = self.engine {
            engine.await.context("job engine task")??;
        }
        self.server.await.context("http server task")??;
        self.mcp.shutdown().await;
        self.store.close().await;
        Ok(())
    }
}

async fn admin_key(store: &Store) -> anyhow::Result<String> {
    let generated = cortex_core::api_key::generate();
    let mut tx = store.begin().await?;
    let user = tx.insert_user("bench", None, Role::Admin).await?;
    let key =
        NewApiKey::system("bench".into(), generated.prefix, generated.hash, Role::Admin, Some(user.id), KeySource::Api);
    tx.insert_api_key(&key).await?;
    tx.commit().await?;
    Ok(generated.plaintext)
}
