//! Channel wiring of `serve` and `worker` (SPEC §2.2, §8.9): env-defined channels are materialised as
//! read-only `source: env` records at start, then the supervisor runs every enabled channel.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use cortex_channels::supervisor::{Supervisor, SupervisorConfig};
use cortex_store::Store;
use cortex_store::channels::ChannelWrite;
use cortex_store::secrets::{Cipher, SecretRef};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;

/// Name of the channel `TELEGRAM_BOT_TOKEN` defines.
const ENV_TELEGRAM: &str = "env-telegram";
/// Name of the channel `DISCORD_BOT_TOKEN` defines.
const ENV_DISCORD: &str = "env-discord";
/// Name of the channel `SLACK_BOT_TOKEN` defines.
const ENV_SLACK: &str = "env-slack";
/// Name of the channel `WHATSAPP_TOKEN` defines.
const ENV_WHATSAPP: &str = "env-whatsapp";

/// An env-defined channel as it should be stored.
struct EnvChannel {
    name: &'static str,
    channel_type: &'static str,
    settings: serde_json::Value,
    secrets: BTreeMap<String, String>,
}

/// Checks that `name`'s value is a URL of one of `schemes` with a host; returns it without a trailing `/`.
fn env_url(name: &str, value: &str, schemes: &[&str]) -> anyhow::Result<String> {
    let valid = url::Url::parse(value).is_ok_and(|url| schemes.contains(&url.scheme()) && url.host().is_some());
    if !valid {
        anyhow::bail!(ConfigError(format!("{name} is not a {} URL: {value}", schemes.join("/"))));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// The env-defined channels of the platforms whose variables are set. A malformed value is a
/// configuration error naming the variable.
fn env_channels() -> anyhow::Result<Vec<EnvChannel>> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
    let mut channels = Vec::new();
    if let Some(token) = var("TELEGRAM_BOT_TOKEN") {
        let mut settings = json!({});
        if let Some(base) = var("TELEGRAM_API_BASE") {
            settings["api_base"] = json!(env_url("TELEGRAM_API_BASE", &base, &["http", "https"])?);
        }
        channels.push(EnvChannel {
            name: ENV_TELEGRAM,
            channel_type: "telegram",
            settings,
            secrets: BTreeMap::from([("bot_token".to_owned(), token)]),
        });
    }
    if let Some(token) = var("DISCORD_BOT_TOKEN") {
        let mut settings = json!({});
        if let Some(base) = var("DISCORD_API_BASE") {
            settings["api_base"] = json!(env_url("DISCORD_API_BASE", &base, &["http", "https"])?);
        }
        if let Some(gateway) = var("DISCORD_GATEWAY_URL") {
            settings["gateway_url"] = json!(env_url("DISCORD_GATEWAY_URL", &gateway, &["ws", "wss"])?);
        }
        channels.push(EnvChannel {
            name: ENV_DISCORD,
            channel_type: "discord",
            settings,
            secrets: BTreeMap::from([("bot_token".to_owned(), token)]),
        });
    }
    if let Some(token) = var("SLACK_BOT_TOKEN") {
        let mut settings = json!({});
        if let Some(base) = var("SLACK_API_BASE") {
            settings["api_base"] = json!(env_url("SLACK_API_BASE", &base, &["http", "https"])?);
        }
        let mut secrets = BTreeMap::from([("bot_token".to_owned(), token)]);
        for (variable, key) in [("SLACK_APP_TOKEN", "app_token"), ("SLACK_SIGNING_SECRET", "signing_secret")] {
            if let Some(value) = var(variable) {
                secrets.insert(key.to_owned(), value);
            }
        }
        if secrets.len() == 1 {
            anyhow::bail!(ConfigError(
                "SLACK_BOT_TOKEN needs SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (Events API)".into()
            ));
        }
        channels.push(EnvChannel { name: ENV_SLACK, channel_type: "slack", settings, secrets });
    }
    if let Some(token) = var("WHATSAPP_TOKEN") {
        let required =
            |name: &str| var(name).ok_or_else(|| ConfigError(format!("WHATSAPP_TOKEN is set, so {name} is required")));
        let phone_number_id = required("WHATSAPP_PHONE_NUMBER_ID")?;
        if !phone_number_id.bytes().all(|byte| byte.is_ascii_digit()) {
            anyhow::bail!(ConfigError(format!("WHATSAPP_PHONE_NUMBER_ID is not a number id: {phone_number_id}")));
        }
        let mut settings = json!({"phone_number_id": phone_number_id});
        if let Some(base) = var("WHATSAPP_API_BASE") {
            settings["api_base"] = json!(env_url("WHATSAPP_API_BASE", &base, &["http", "https"])?);
        }
        let secrets = BTreeMap::from([
            ("access_token".to_owned(), token),
            ("verify_token".to_owned(), required("WHATSAPP_VERIFY_TOKEN")?),
            ("app_secret".to_owned(), required("WHATSAPP_APP_SECRET")?),
        ]);
        channels.push(EnvChannel { name: ENV_WHATSAPP, channel_type: "whatsapp", settings, secrets });
    }
    Ok(channels)
}

/// Creates or updates the env-defined channels; one whose variables were removed is disabled (its
/// history stays).
pub async fn materialise_env(store: &Store, cipher: &Cipher) -> anyhow::Result<()> {
    let wanted = env_channels()?;
    for EnvChannel { name, channel_type, settings, secrets } in &wanted {
        let existing = store.channel_by_name(name).await.context("reading env channels")?;
        let id = existing.as_ref().map_or_else(cortex_core::new_id, |channel| channel.id);
        let write = ChannelWrite {
            id,
            channel_type: (*channel_type).to_owned(),
            name: (*name).to_owned(),
            config: settings.clone(),
            secrets_enc: Some(cipher.encrypt_json(&SecretRef::new("channel", "secrets_enc", id), secrets)),
            secret_keys: secrets.keys().cloned().collect(),
            source: "env".into(),
            enabled: true,
            inbound_policy: existing
                .as_ref()
                .map_or_else(|| "open".to_owned(), |channel| channel.inbound_policy.clone()),
            default_agent_id: existing.as_ref().and_then(|channel| channel.default_agent_id),
            bot_identity: existing.as_ref().and_then(|channel| channel.bot_identity.clone()),
        };
        let unchanged = existing.as_ref().is_some_and(|channel| {
            channel.enabled && channel.config == write.config && same_secrets(cipher, channel, secrets)
        });
        if unchanged {
            continue;
        }
        let mut tx = store.begin().await?;
        if existing.is_some() {
            tx.update_channel(&write).await?;
        } else {
            tx.insert_channel(&write).await.with_context(|| format!("creating the env channel {name}"))?;
        }
        tx.commit().await?;
    }
    for channel in store.channels().await? {
        let still_wanted = wanted.iter().any(|env| env.name == channel.name);
        if channel.source == "env" && channel.enabled && !still_wanted {
            let mut tx = store.begin().await?;
            tx.update_channel(&ChannelWrite {
                id: channel.id,
                channel_type: channel.channel_type.clone(),
                name: channel.name.clone(),
                config: channel.config.clone(),
                secrets_enc: channel.secrets_enc.clone(),
                secret_keys: channel.secret_keys.clone(),
                source: channel.source.clone(),
                enabled: false,
                inbound_policy: channel.inbound_policy.clone(),
                default_agent_id: channel.default_agent_id,
                bot_identity: channel.bot_identity.clone(),
            })
            .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

fn same_secrets(
    cipher: &Cipher,
    channel: &cortex_store::channels::Channel,
    secrets: &BTreeMap<String, String>,
) -> bool {
    channel.secrets_enc.as_ref().is_some_and(|enc| {
        cipher
            .decrypt_json(&SecretRef::new("channel", "secrets_enc", channel.id), enc)
            .is_ok_and(|stored| &stored == secrets)
    })
}

/// The process's channel supervisor (not yet running), calling chat platforms with `http` (the process's
/// shared client, see `serve::http_client`).
pub fn supervisor(store: &Store, cipher: &Arc<Cipher>, http: reqwest::Client) -> anyhow::Result<Arc<Supervisor>> {
    let public_url = std::env::var("CORTEX_PUBLIC_URL").ok().filter(|url| !url.trim().is_empty());
    Ok(Supervisor::new(store.clone(), http, (**cipher).clone(), SupervisorConfig { public_url }, cortex_core::new_id()))
}

/// Runs the supervisor until `shutdown`.
pub fn spawn(supervisor: &Arc<Supervisor>, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervisor.clone().run(shutdown.clone()))
}
