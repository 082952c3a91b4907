//! The process-wide [`Runtime`]: built once at start from [`RuntimeConfig`], it owns the model providers,
//! the tool resolver and the job handler that runs agent turns, and answers the API's questions about
//! them (effective tools, breakers, usage).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cortex_core::breaker::BreakerState;
use cortex_jobs::JobHandler;
use cortex_mcp::Pool;
use cortex_memory::{ApiEmbedder, Embedder, EmbeddingKey, EmbeddingsConfig, EmbeddingsMode, Memory};
use cortex_store::budgets::{BudgetScope, BudgetUsageRow, day_period, month_period};
use cortex_store::secrets::Cipher;
use cortex_store::{Store, StoreError};
use cortex_tools::http::GuardedHttp;
use cortex_tools::ssrf::SystemResolver;
use uuid::Uuid;

use crate::agent_loop::AgentHandler;
use crate::catalog::{BuiltinDeps, Catalog, builtin_registry};
use crate::env::EnvSettings;
use crate::providers::Providers;
use crate::secrets::Secrets;
use crate::tools::{EffectiveTool, ToolReport, ToolResolver};

/// Everything the runtime needs from the process; built by the binary.
pub struct RuntimeConfig {
    /// Where session buffers (`sessions/<job_id>/…`) are written.
    pub data_dir: PathBuf,
    /// Snapshot of the relevant environment (`OPENAI_*`, `ANTHROPIC_*`, `CORTEX_SSRF_ALLOW`,
    /// `CORTEX_SEARCH_*`, `CORTEX_DELEGATION_*`); passed in rather than read so tests need no process
    /// environment.
    pub env: BTreeMap<String, String>,
    /// Decrypts provider keys, webhook headers and MCP secrets.
    pub cipher: Arc<Cipher>,
    /// The process's MCP connections (shared with the API's discovery).
    pub mcp: Arc<Pool>,
    /// HTTP client for model providers (rustls with the ring provider installed).
    pub http: reqwest::Client,
    /// In-call retry schedule of model calls.
    pub llm_retry: cortex_llm::RetryPolicy,
    /// Filled by the runtime with the current secret set (credentials and secret env values), so the
    /// binary's log writer redacts with the same set.
    pub redactor: cortex_core::redact::SharedRedactor,
}

/// Why the runtime cannot start or answer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A malformed environment value; the binary exits 2 with this message.
    #[error("{var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },
    /// The guarded HTTP client for agent-driven requests cannot be built.
    #[error("cannot build the guarded HTTP client: {0}")]
    Http(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shared by the handler and the runtime's queries.
pub(crate) struct Services {
    pub store: Store,
    pub data_dir: PathBuf,
    pub providers: Providers,
    pub tools: ToolResolver,
    pub memory: Arc<Memory>,
    pub secrets: Secrets,
}

/// The agent runtime of one process.
pub struct Runtime {
    pub store: Store,
    /// Agent memory: the API routes and the `memory_*` tools share it.
    pub memory: Arc<Memory>,
    /// Providers and tool refs definitions may name (API validation).
    pub catalog: Catalog,
    pub(crate) services: Arc<Services>,
    /// Live extraction settings from the environment (`None`: off); the binary enables them on the store.
    extraction: Option<cortex_store::extraction::ExtractionPolicy>,
}

/// An agent's spend against its limits, for `GET /agents/{id}/usage`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentUsage {
    /// Every recorded period (days and months, UTC), oldest first.
    pub periods: Vec<UsagePeriod>,
    /// The configured limits (absent ones are unlimited).
    pub limits: UsageLimits,
    /// The keys of today's and this month's periods.
    pub today: String,
    pub this_month: String,
}

/// Spend of one period.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsagePeriod {
    pub period: String,
    pub tokens_spent: i64,
    pub tokens_reserved: i64,
    pub usd_spent: f64,
    pub usd_reserved: f64,
}

impl From<BudgetUsageRow> for UsagePeriod {
    fn from(row: BudgetUsageRow) -> Self {
        Self {
            period: row.period,
            tokens_spent: row.tokens_spent,
            tokens_reserved: row.tokens_reserved,
            usd_spent: row.usd_spent,
            usd_reserved: row.usd_reserved,
        }
    }
}

/// The local embedding model's directory: `CORTEX_EMBEDDINGS_MODEL_DIR`, else the default in the data dir.
fn local_model_dir(embeddings: &EmbeddingsConfig, data_dir: &std::path::Path) -> PathBuf {
    embeddings.local_dir.clone().unwrap_or_else(|| data_dir.join(cortex_memory::embed::DEFAULT_LOCAL_MODEL_DIR))
}

/// Loads the in-process embedder off the async threads (it reads ~90 MB of weights); a missing model or a
/// build without the feature stops start-up with the reason.
async fn load_local_embedder(
    embeddings: &EmbeddingsConfig,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn Embedder>, RuntimeError> {
    let dir = local_model_dir(embeddings, data_dir);
    let invalid = |reason: String| RuntimeError::InvalidEnv { var: "CORTEX_EMBEDDINGS", reason };
    let embedder = tokio::task::spawn_blocking(move || cortex_memory::embed::local_embedder(&dir))
        .await
        .map_err(|err| invalid(err.to_string()))?
        .map_err(|err| invalid(err.to_string()))?;
    tracing::info!(model = embedder.model(), "local embeddings loaded");
    Ok(embedder)
}

/// The agent's configured spend limits.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsageLimits {
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    pub usd_per_day: Option<f64>,
    pub usd_per_month: Option<f64>,
    pub tokens_per_job: u64,
    pub usd_per_job: Option<f64>,
}

impl Runtime {
    /// Validates the environment, materialises env-defined providers as `source: "env"` credentials and
    /// builds the provider clients and tool resolver.
    pub async fn new(store: Store, config: RuntimeConfig) -> Result<Arc<Runtime>, RuntimeError> {
        let env = EnvSettings::parse(&config.env)?;
        let http = GuardedHttp::new(env.ssrf.clone(), Arc::new(SystemResolver))
            .map_err(|err| RuntimeError::Http(err.to_string()))?;
        let flows = crate::signin::SignInFlows::from_env(&config.env)?;
        let embedding_key = EmbeddingKey::default();
        let embedder: Option<Arc<dyn Embedder>> = match env.embeddings.mode {
            EmbeddingsMode::Api => Some(Arc::new(
                ApiEmbedder::new(config.http.clone(), &env.embeddings)
                    .with_managed_key(embedding_key.clone(), store.clone()),
            )),
            EmbeddingsMode::Local => Some(load_local_embedder(&env.embeddings, &config.data_dir).await?),
            EmbeddingsMode::None
                if env.embeddings.auto_local
                    && cortex_memory::embed::local_model_present(&local_model_dir(
                        &env.embeddings,
                        &config.data_dir,
                    )) =>
            {
                Some(load_local_embedder(&env.embeddings, &config.data_dir).await?)
            }
            EmbeddingsMode::None => None,
        };
        let index = cortex_memory::open_index(&env.vector, &store, config.http.clone())
            .await
            .map_err(|err| RuntimeError::InvalidEnv { var: "CORTEX_VECTOR_BACKEND", reason: err.to_string() })?;
        let memory = Arc::new(Memory::new(store.clone(), embedder, index).with_data_dir(config.data_dir.clone()));
        let providers = Providers::new(store.clone(), config.cipher.clone(), config.http, config.llm_retry, flows);
        providers.materialise_env(&env).await?;
        providers.sync().await?;
        let secrets = Secrets::new(store.clone(), config.cipher.clone(), config.redactor, embedding_key, &config.env);
        secrets.refresh().await?;
        let http = Arc::new(http);
        let builtins = Arc::new(builtin_registry(BuiltinDeps {
            store: store.clone(),
            memory: memory.clone(),
            http: http.clone(),
            web_search: env.web_search,
            delegation: env.delegation,
        }));
        let tools = ToolResolver::new(store.clone(), config.cipher, config.mcp, http, builtins.clone());
        let catalog = Catalog::new(builtins);
        let services = Arc::new(Services {
            store: store.clone(),
            data_dir: config.data_dir,
            providers,
            tools,
            memory: memory.clone(),
            secrets,
        });
        Ok(Arc::new(Runtime { store, memory, catalog, services, extraction: env.extraction }))
    }

    /// The models the server behind each usable `llm` credential reports, by credential name (`Err` holds a
    /// reason without secrets); cached for an hour per credential version unless `refresh`.
    pub async fn reported_models(
        &self,
        refresh: bool,
    ) -> Result<std::collections::HashMap<String, Result<Vec<String>, String>>, cortex_store::StoreError> {
        self.services.providers.reported_models(refresh).await
    }

    /// Providers that offer sign-in here (`crate::signin`).
    pub fn sign_in_flows(&self) -> Vec<String> {
        self.services.providers.sign_in_flows()
    }

    /// Starts a provider sign-in: the URL to open and the `state` that completes it.
    pub async fn start_sign_in(
        &self,
        request: &crate::signin::SignInRequest<'_>,
    ) -> Result<crate::signin::Started, crate::signin::SignInError> {
        self.services.providers.start_sign_in(request).await
    }

    /// Completes a provider sign-in with the returned code; the id of the stored credential.
    pub async fn complete_sign_in(&self, state: &str, code: &str) -> Result<uuid::Uuid, crate::signin::SignInError> {
        let id = self.services.providers.complete_sign_in(state, code).await?;
        if let Err(err) = self.services.secrets.reload().await {
            tracing::warn!(error = %err, "the secret redactor was not rebuilt after a sign-in");
        }
        Ok(id)
    }

    /// The process's current redactor of secret values (SPEC Appendix B "Credentials").
    pub fn redactor(&self) -> cortex_core::redact::SharedRedactor {
        self.services.secrets.shared()
    }

    /// Rebuilds the redactor now (after a credential was created or changed through the API).
    pub async fn refresh_secrets(&self) -> Result<(), RuntimeError> {
        self.services.secrets.reload().await?;
        Ok(())
    }

    /// How many times the secret set was read from the credential rows since start: once at start, then
    /// once after each credential change — never per job or tool call while nothing changed.
    pub fn secret_set_reads(&self) -> u64 {
        self.services.secrets.reads()
    }

    /// The handler to register for `chat` and `task` jobs.
    pub fn handler(&self) -> Arc<dyn JobHandler> {
        Arc::new(AgentHandler::new(self.services.clone()))
    }

    /// The handler to register for `memory_extract` jobs (SPEC §9.2).
    pub fn extraction_handler(&self) -> Arc<dyn JobHandler> {
        Arc::new(crate::extraction::ExtractionHandler::new(self.services.clone()))
    }

    /// The extraction policy `CORTEX_MEMORY_*` asks for; `None` when extraction is off. The process turns
    /// it on with [`cortex_store::Store::enable_memory_extraction`].
    pub fn extraction_policy(&self) -> Option<cortex_store::extraction::ExtractionPolicy> {
        self.extraction
    }

    /// Every provider breaker seen so far: (provider, model, state).
    pub fn provider_breakers(&self) -> Vec<(String, String, BreakerState)> {
        self.services.providers.failover.breaker_states()
    }

    /// The tools the agent's model gets now (SPEC §6.1), exactly as offered.
    pub async fn effective_tools(&self, agent_id: Uuid) -> Result<Vec<EffectiveTool>, RuntimeError> {
        Ok(self.tool_report(agent_id).await?.tools)
    }

    /// The effective tools plus enabled refs that resolve to nothing (warnings for the API).
    pub async fn tool_report(&self, agent_id: Uuid) -> Result<ToolReport, RuntimeError> {
        let agent = self.store.get_agent_by_id(agent_id).await?;
        let set = self.services.tools.tool_set(&agent).await?;
        Ok(ToolReport::from(&set))
    }

    /// Why `tool_ref` cannot be offered to the agent right now (SPEC §6.1), or `None` when it can — the
    /// same rule the loop applies, for policies that are not enabled too.
    pub async fn unresolvable_reason(&self, agent_id: Uuid, tool_ref: &str) -> Result<Option<String>, RuntimeError> {
        let agent = self.store.get_agent_by_id(agent_id).await?;
        Ok(self.services.tools.resolve(&agent, tool_ref).await?.err())
    }

    /// Spend of the agent per day and month against its limits.
    pub async fn usage(&self, agent_id: Uuid) -> Result<AgentUsage, RuntimeError> {
        let agent = self.store.get_agent_by_id(agent_id).await?;
        let rows = self.store.budget_usage(BudgetScope::Agent, agent_id).await?;
        let limits = &agent.resource_limits;
        let now = self.store.clock().now();
        Ok(AgentUsage {
            periods: rows.into_iter().map(UsagePeriod::from).collect(),
            limits: UsageLimits {
                tokens_per_day: limits.token_budget_per_day,
                tokens_per_month: limits.token_budget_per_month,
                usd_per_day: limits.cost_budget_usd_per_day,
                usd_per_month: limits.cost_budget_usd_per_month,
                tokens_per_job: limits.token_budget,
                usd_per_job: limits.cost_budget_usd_per_job,
            },
            today: day_period(now),
            this_month: month_period(now),
        })
    }

    /// Where a job's session buffer lives (read it with [`crate::read_buffer`]).
    pub fn buffer_dir(&self, job_id: Uuid) -> PathBuf {
        crate::buffer::buffer_dir(&self.services.data_dir, job_id)
    }
}
