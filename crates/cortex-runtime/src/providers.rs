//! LLM providers as the runtime sees them (SPEC §5.2, §5.3, §5.8): `provider_credential` rows of kind `llm`
//! turned into clients of the process-wide [`FailoverClient`], plus the prices used for budgets and cost.
//!
//! Env-defined providers (`OPENAI_*`, `ANTHROPIC_*`) are materialised as `source: "env"` rows at start so
//! they are listed like API-created ones. Before each job the client set is re-synchronised with the rows
//! (cheap: one query, and clients are rebuilt only for rows whose [`version`] changed), so credentials
//! created, rotated or removed through the API take effect without a restart while breaker state survives.
//!
//! A row inherits its wire style and base URL from the preset it serves (`cortex_llm::presets`: its
//! `provider` column, else its name) unless it sets them. The models each provider reports (`/v1/models`)
//! are cached for [`MODELS_TTL`] per credential version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cortex_core::Timestamp;
use cortex_core::agent::ModelRef;
use cortex_llm::{ApiStyle, FailoverClient, ModelPrice, PriceOverrides, ProviderConfig, RetryPolicy};
use cortex_store::credentials::{CredentialUpsert, ProviderCredential, secret_hint, secret_ref};
use cortex_store::secrets::Cipher;
use cortex_store::{Store, StoreError};
use serde_json::Value;
use uuid::Uuid;

use crate::RuntimeError;
use crate::env::{ANTHROPIC_DEFAULT_BASE, EnvSettings, OPENAI_DEFAULT_BASE};

/// `provider_credential.kind` of model providers.
pub(crate) const LLM_KIND: &str = "llm";

/// What is known about one configured provider.
struct Known {
    id: Uuid,
    version: u64,
    pricing: Pricing,
    /// Whether the row says `error` or its last use is older than [`USE_RECORD_INTERVAL`] (then a successful
    /// call writes `last_used_at` and clears the error; otherwise the write is skipped).
    use_recorded_at: Option<Timestamp>,
    in_error: bool,
}

/// `last_used_at` is written at most this often per provider, so a busy provider costs no write per call.
const USE_RECORD_INTERVAL: chrono::Duration = chrono::Duration::seconds(60);

/// How long a provider's reported model list is reused.
pub const MODELS_TTL: chrono::Duration = chrono::Duration::hours(1);

/// A provider's reported models as fetched at `at` for credential [`version`].
struct ReportedModels {
    version: u64,
    at: Timestamp,
    models: Result<Vec<String>, String>,
}

/// Operator prices of one provider: per model prefix, and a default for models nobody priced.
#[derive(Default)]
struct Pricing {
    overrides: PriceOverrides,
    default: Option<ModelPrice>,
}

impl Pricing {
    /// Reads the `prices` column (see `cortex_store::credentials`); malformed entries are skipped.
    fn parse(prices: &Value) -> Pricing {
        let mut pricing = Pricing::default();
        for (prefix, price) in prices.as_object().into_iter().flatten() {
            let Ok(price) = serde_json::from_value::<ModelPrice>(price.clone()) else {
                tracing::warn!(prefix, "ignoring an unreadable operator price");
                continue;
            };
            if !price.is_valid() {
                continue;
            }
            if prefix == "*" {
                pricing.default = Some(price);
            } else {
                pricing.overrides.insert(prefix.clone(), price);
            }
        }
        pricing
    }
}

/// The process's model providers.
pub(crate) struct Providers {
    store: Store,
    cipher: Arc<Cipher>,
    http: reqwest::Client,
    pub failover: Arc<FailoverClient>,
    known: Mutex<HashMap<String, Known>>,
    reported: tokio::sync::Mutex<HashMap<String, ReportedModels>>,
}

impl Providers {
    pub(crate) fn new(store: Store, cipher: Arc<Cipher>, http: reqwest::Client, retry: RetryPolicy) -> Providers {
        let failover = Arc::new(FailoverClient::new(HashMap::new(), store.clock().clone(), retry));
        Providers {
            store,
            cipher,
            http,
            failover,
            known: Mutex::new(HashMap::new()),
            reported: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    fn known(&self) -> MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the env-defined providers as `source: "env"` credentials (re-activating them: a restart with a
    /// fixed environment is how an env credential is repaired) and removes env rows the environment dropped.
    pub(crate) async fn materialise_env(&self, env: &EnvSettings) -> Result<(), RuntimeError> {
        let mut tx = self.store.begin().await?;
        for provider in &env.providers {
            let existing = self.store.credential(LLM_KIND, provider.name).await?;
            let id = existing.map_or_else(cortex_core::new_id, |row| row.id);
            let secret_enc = provider.api_key.as_ref().map(|key| self.cipher.encrypt(&secret_ref(id), key.as_bytes()));
            let secret_hint = provider.api_key.as_deref().and_then(secret_hint);
            tx.upsert_credential(&CredentialUpsert {
                id,
                kind: LLM_KIND.into(),
                name: provider.name.into(),
                api_style: Some(provider.api_style.as_str().into()),
                base_url: Some(provider.base_url.clone()),
                secret_enc,
                secret_hint,
                source: "env".into(),
            })
            .await?;
        }
        for name in &env.absent_providers {
            tx.delete_credential(LLM_KIND, name, "env").await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Brings the failover client in line with the credential rows: usable rows get a (re)built client,
    /// disabled or deleted ones lose theirs.
    pub(crate) async fn sync(&self) -> Result<(), StoreError> {
        let rows = self.store.credentials_of_kind(LLM_KIND).await?;
        let mut known = self.known();
        let usable: Vec<&ProviderCredential> = rows.iter().filter(|row| row.status != "disabled").collect();
        known.retain(|name, _| {
            let keep = usable.iter().any(|row| &row.name == name);
            if !keep {
                self.failover.remove_provider(name);
            }
            keep
        });
        for row in usable {
            let fresh = known.get(&row.name).is_some_and(|k| k.id == row.id && k.version == version(row));
            if fresh {
                continue;
            }
            match self.client_config(row) {
                Ok(config) => {
                    self.failover.set_provider(cortex_llm::build_provider(config, self.http.clone()));
                    known.insert(
                        row.name.clone(),
                        Known {
                            id: row.id,
                            version: version(row),
                            pricing: Pricing::parse(&row.prices),
                            use_recorded_at: row.last_used_at,
                            in_error: row.status == "error",
                        },
                    );
                }
                Err(reason) => {
                    tracing::warn!(provider = %row.name, %reason, "provider credential unusable");
                    self.failover.remove_provider(&row.name);
                    known.remove(&row.name);
                }
            }
        }
        Ok(())
    }

    fn client_config(&self, row: &ProviderCredential) -> Result<ProviderConfig, String> {
        let preset = cortex_llm::presets::find(row.provider_name());
        let api_style: ApiStyle = match (row.api_style.as_deref(), preset) {
            (Some(style), _) => style.parse()?,
            (None, Some(preset)) => preset.api_style,
            (None, None) => ApiStyle::OpenAi,
        };
        let default_base = match (preset, api_style) {
            (Some(preset), _) if preset.api_style == api_style => preset.base_url,
            (_, ApiStyle::OpenAi) => OPENAI_DEFAULT_BASE,
            (_, ApiStyle::Anthropic) => ANTHROPIC_DEFAULT_BASE,
        };
        let base_url = row.base_url.clone().unwrap_or_else(|| default_base.to_owned());
        let mut config = ProviderConfig::new(row.name.clone(), api_style, base_url);
        if let Some(stored) = &row.secret_enc {
            let bytes = self.cipher.decrypt(&secret_ref(row.id), stored).map_err(|err| err.to_string())?;
            let key = String::from_utf8(bytes).map_err(|_| "the stored key is not UTF-8".to_owned())?;
            config = config.with_api_key(key);
        }
        Ok(config)
    }

    /// The models the server behind each usable `llm` credential reports, by credential name: cached for
    /// [`MODELS_TTL`] (and until the credential changes) unless `refresh`. Failures are cached like
    /// successes, so a dead local server is not asked on every listing.
    pub(crate) async fn reported_models(
        &self,
        refresh: bool,
    ) -> Result<HashMap<String, Result<Vec<String>, String>>, StoreError> {
        let rows = self.store.credentials_of_kind(LLM_KIND).await?;
        let now = self.store.clock().now();
        let mut reported = self.reported.lock().await;
        reported.retain(|name, _| rows.iter().any(|row| &row.name == name));
        let mut stale = Vec::new();
        for row in rows.iter().filter(|row| row.status != "disabled") {
            let fresh = reported
                .get(&row.name)
                .is_some_and(|entry| entry.version == version(row) && now - entry.at < MODELS_TTL);
            if refresh || !fresh {
                stale.push(row);
            }
        }
        let fetches = stale.iter().map(|row| async move {
            let models = match self.client_config(row) {
                Ok(config) => cortex_llm::list_models(&config, &self.http).await.map_err(|err| err.to_string()),
                Err(reason) => Err(reason),
            };
            (row.name.clone(), version(row), models)
        });
        for (name, version, models) in futures::future::join_all(fetches).await {
            reported.insert(name, ReportedModels { version, at: now, models });
        }
        Ok(rows
            .iter()
            .filter(|row| row.status != "disabled")
            .filter_map(|row| reported.get(&row.name).map(|entry| (row.name.clone(), entry.models.clone())))
            .collect())
    }

    /// Whether a client exists for `provider` (after [`Providers::sync`]).
    pub(crate) fn has(&self, provider: &str) -> bool {
        self.known().contains_key(provider)
    }

    /// Whether a successful call through `provider` at `now` should be written to its credential row
    /// (clearing an `error` status, refreshing `last_used_at`); assumes the caller then writes it.
    pub(crate) fn take_use_record(&self, provider: &str, now: Timestamp) -> bool {
        let mut known = self.known();
        let Some(entry) = known.get_mut(provider) else { return false };
        let due = entry.in_error || entry.use_recorded_at.is_none_or(|at| now - at >= USE_RECORD_INTERVAL);
        if due {
            entry.in_error = false;
            entry.use_recorded_at = Some(now);
        }
        due
    }

    /// Price of `candidate`: operator override or catalogue (longest prefix), else the provider's default;
    /// `None` when nobody priced it.
    pub(crate) fn price(&self, candidate: &ModelRef) -> Option<ModelPrice> {
        let known = self.known();
        match known.get(&candidate.provider) {
            Some(entry) => entry.pricing.overrides.price_for(&candidate.model).or(entry.pricing.default),
            None => cortex_llm::lookup(&candidate.model).map(|info| info.price),
        }
    }
}

/// Fingerprint of everything a client is built from. Not `updated_at`: two edits within one clock tick
/// would look alike, and every new secret has a fresh nonce, so a rotation always changes this.
fn version(row: &ProviderCredential) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&row.provider, &row.api_style, &row.base_url, &row.secret_enc, &row.status, row.prices.to_string())
        .hash(&mut hasher);
    hasher.finish()
}
