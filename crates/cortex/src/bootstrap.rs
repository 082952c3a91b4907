//! First-start credentials (SPEC §2.2, §17.2): a fresh install never runs open.
//!
//! - `CORTEX_API_KEY` set: it must be strong (placeholders and short keys are refused); it is stored
//!   hashed as an admin key the first time and accepted from then on (unless an admin revokes it; then
//!   start-up says so and how to recover, instead of the key silently failing every request).
//! - Otherwise, when no usable admin key exists, one is generated, stored hashed and printed once.

use anyhow::{Context, bail};
use cortex_core::role::Role;
use cortex_store::Store;
use cortex_store::users::{KeySource, NewApiKey};

use crate::config::ConfigError;

/// What bootstrap did, for the start-up message.
pub enum Bootstrap {
    /// A key was generated; its plaintext must be shown to the operator once.
    Generated(String),
    /// The environment key is in place.
    FromEnv,
    /// The environment key was revoked (or expired): every request with it gets 401.
    EnvKeyUnusable,
    /// Admin keys already exist.
    Existing,
}

/// What `serve` says when `CORTEX_API_KEY` can no longer be used.
pub const UNUSABLE_ENV_KEY: &str = "warning: CORTEX_API_KEY names a key that was revoked or has expired; every request \
     with it is refused (401). Create a new admin key with `cortex keys create --name admin --role admin` (same \
     CORTEX_DATA_DIR or CORTEX_DATABASE_URL), then set CORTEX_API_KEY to it or unset it.";

/// Refuses a weak `CORTEX_API_KEY` before anything starts — an empty one too: set but empty is a mistake
/// (a missing secret in a deployment), not a request for a generated key.
pub fn check_env_key(env_key: Option<&str>) -> anyhow::Result<()> {
    if env_key.is_some_and(|key| key.trim().is_empty()) {
        bail!(ConfigError(
            "CORTEX_API_KEY is set but empty; set it to a strong key (`cortex keys generate` prints one) or unset it \
             to have a key generated and printed once"
                .into()
        ));
    }
    if let Some(key) = env_key
        && let Err(weakness) = cortex_core::api_key::check_bootstrap_strength(key)
    {
        bail!(ConfigError(format!("CORTEX_API_KEY {weakness}")));
    }
    Ok(())
}

pub async fn ensure_admin_key(store: &Store, env_key: Option<&str>) -> anyhow::Result<Bootstrap> {
    if let Some(key) = env_key {
        let prefix = cortex_api::auth::lookup_prefix(key);
        if let Some(found) = store.find_api_key(&prefix).await.context("looking up the bootstrap key")? {
            let stored = found.key;
            if !cortex_core::api_key::verify(key, &found.hash) {
                bail!(ConfigError("CORTEX_API_KEY collides with a stored key prefix; choose another key".into()));
            }
            if !stored.is_active(store.clock().now()) {
                return Ok(Bootstrap::EnvKeyUnusable);
            }
            return Ok(Bootstrap::FromEnv);
        }
        insert_admin(store, "bootstrap (CORTEX_API_KEY)", prefix, cortex_core::api_key::hash(key), KeySource::Env)
            .await?;
        return Ok(Bootstrap::FromEnv);
    }
    if store.count_active_admin_keys().await.context("counting admin keys")? > 0 {
        return Ok(Bootstrap::Existing);
    }
    let generated = cortex_core::api_key::generate();
    insert_admin(store, "bootstrap", generated.prefix, generated.hash, KeySource::Bootstrap).await?;
    Ok(Bootstrap::Generated(generated.plaintext))
}

async fn insert_admin(
    store: &Store,
    name: &str,
    prefix: String,
    hash: String,
    source: KeySource,
) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    let user = tx.insert_user("admin", None, Role::Admin).await?;
    tx.insert_api_key(&NewApiKey::system(name.into(), prefix, hash, Role::Admin, Some(user.id), source)).await?;
    tx.commit().await?;
    Ok(())
}
