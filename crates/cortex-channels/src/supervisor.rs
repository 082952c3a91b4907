//! The channel supervisor (SPEC §8.9): starts an adapter for every enabled channel, keeps it running,
//! and reloads a channel within seconds of it being created, changed or deleted (a `ChannelChanged`
//! notification, also across processes through PostgreSQL `NOTIFY`), without touching the others.
//!
//! Each channel runs on its own tasks — receive loop, router, outbox delivery — so a slow or broken
//! channel never delays another. A receive loop that holds a connection (Telegram long polling, the Discord gateway, Slack Socket Mode) runs
//! under the lease `channel:<id>` (TTL 30 s, renewed every 10 s): with several processes exactly one
//! polls a bot or holds its gateway, and the lease moves when that process dies. A failed loop restarts with backoff
//! `min(30 s, 1 s × 2^(n−1))` ± 20 %; five failures in a row open a 60 s circuit.
//!
//! Health is proven, not assumed: every 15 s each channel's platform identity call runs (`getMe`,
//! `users/@me`, `auth.test`, the WhatsApp phone number) on its own task, and a failure shows the channel
//! `unhealthy` with the platform's reason; a connection-holding receiver is also `unhealthy` when the
//! platform gave no sign of life (a poll answered, a heartbeat acknowledged, a socket message) for 45 s,
//! and a watchdog then drops that connection and restarts it with the same backoff. For webhook-only
//! channels the identity call is all that can be proven (the platform pushes when it likes).
//!
//! Every change of a channel's state is published as a [`HealthChange`] (SSE `channel.health`, served
//! by `GET /channels/stream`): a watcher recomputes [`Supervisor::health`] whenever a receive loop or a
//! probe records something (and every few seconds, for the 45 s staleness rule) and publishes the
//! channels whose state differs from what it published last; a channel that stops running is published
//! `stopped` once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cortex_core::Timestamp;
use cortex_store::channels::Channel;
use cortex_store::secrets::{Cipher, SecretRef};
use cortex_store::{Notification, Store};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapter::{AdapterError, ChannelAdapter, InboundSink, WebhookBatch, WebhookError, WebhookRequest};
use crate::discord::{DiscordAdapter, DiscordConfig};
use crate::router::Router;
use crate::sink::StoreSink;
use crate::slack::{SlackAdapter, SlackConfig};
use crate::telegram::{TelegramAdapter, TelegramConfig, TelegramMode};
use crate::types::Platform;
use crate::whatsapp::{WhatsAppAdapter, WhatsAppConfig};

const LEASE_TTL: chrono::Duration = chrono::Duration::seconds(30);
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the supervisor re-reads channels and probes health.
const PROBE_INTERVAL: Duration = Duration::from_secs(15);
/// How long one identity probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connected adapter not heard from for this long is unhealthy.
const STALE_AFTER: chrono::Duration = chrono::Duration::seconds(45);
/// The watchdog's view of [`STALE_AFTER`], in monotonic time.
const QUIET_LIMIT: Duration = Duration::from_secs(45);
/// How often the watchdog looks for signs of life.
const WATCHDOG_TICK: Duration = Duration::from_secs(5);
const CIRCUIT_FAILURES: u32 = 5;
const CIRCUIT_OPEN: Duration = Duration::from_secs(60);
/// How often the health watcher re-evaluates without being told (time alone can make a channel stale).
const HEALTH_RECHECK: Duration = Duration::from_secs(5);
/// Health changes a slow stream reader may fall behind by before it is told to resynchronise.
const HEALTH_BACKLOG: usize = 256;

cortex_core::string_enum! {
    /// A channel's state as operators see it (`GET /channels`, `/readyz`).
    pub enum ChannelState {
        Starting = "starting",
        Healthy = "healthy",
        Unhealthy = "unhealthy",
        Recovering = "recovering",
        CircuitOpen = "circuit_open",
        Stopped = "stopped",
    }
}

/// Health of one channel in this process.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelHealth {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub state: ChannelState,
    pub last_error: Option<String>,
    /// When the platform was last heard from (a poll answered).
    pub last_activity_at: Option<Timestamp>,
}

/// One channel's state changed in this process (SSE `channel.health`).
#[derive(Debug, Clone, Serialize)]
pub struct HealthChange {
    /// Increases with every change this process publishes (the SSE event id).
    #[serde(skip)]
    pub seq: u64,
    pub channel_id: Uuid,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub state: ChannelState,
    pub last_error: Option<String>,
}

/// Settings shared by every channel of the process.
#[derive(Debug, Clone, Default)]
pub struct SupervisorConfig {
    /// `CORTEX_PUBLIC_URL`: webhook-mode channels register `{public_url}/webhooks/<platform>/<id>`.
    pub public_url: Option<String>,
}

/// Why a webhook request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRejection {
    /// No running channel with that id takes webhooks of that platform.
    #[error("no such webhook")]
    UnknownChannel,
    #[error(transparent)]
    Refused(#[from] WebhookError),
    /// Recording failed (database down): the platform should retry.
    #[error("recording the webhook failed: {0}")]
    Unavailable(String),
}

struct Running {
    version: Timestamp,
    channel: Channel,
    adapter: Arc<dyn ChannelAdapter>,
    sink: Arc<StoreSink>,
    status: Arc<Mutex<(ChannelState, Option<String>)>>,
    /// Why the last identity probe failed; `None` when it passed (or none ran yet).
    probe: Arc<Mutex<Option<String>>>,
    cancel: CancellationToken,
}

/// A channel as this process holds it: running, or listed with the reason it cannot start (bad
/// settings, undecryptable secrets) until its row changes.
enum Slot {
    Running(Running),
    Broken { version: Timestamp, channel: Channel, reason: String },
}

impl Slot {
    fn version(&self) -> Timestamp {
        match self {
            Slot::Running(run) => run.version,
            Slot::Broken { version, .. } => *version,
        }
    }

    fn stop(&self) {
        if let Slot::Running(run) = self {
            run.cancel.cancel();
        }
    }
}

/// Runs and supervises the channels of this process.
pub struct Supervisor {
    store: Store,
    http: reqwest::Client,
    cipher: Cipher,
    config: SupervisorConfig,
    holder: Uuid,
    slots: Mutex<HashMap<Uuid, Slot>>,
    /// Signalled whenever a receive loop or a probe records a state (the health watcher re-evaluates).
    health_changed: Arc<Notify>,
    health_events: broadcast::Sender<HealthChange>,
    health_seq: AtomicU64,
    /// What the watcher published last per channel; changes are diffed against it.
    published: Mutex<HashMap<Uuid, HealthChange>>,
}

impl Supervisor {
    /// A supervisor whose leases are held as `holder` (the process's worker id).
    pub fn new(
        store: Store,
        http: reqwest::Client,
        cipher: Cipher,
        config: SupervisorConfig,
        holder: Uuid,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            http,
            cipher,
            config,
            holder,
            slots: Mutex::new(HashMap::new()),
            health_changed: Arc::new(Notify::new()),
            health_events: broadcast::channel(HEALTH_BACKLOG).0,
            health_seq: AtomicU64::new(0),
            published: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP client adapters use (the API verifies credentials with it).
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of every channel as last published, and the changes from here on (`GET
    /// /channels/stream`). Subscribing first and reading the snapshot second means nothing falls between.
    pub fn health_changes(&self) -> (Vec<HealthChange>, broadcast::Receiver<HealthChange>) {
        let receiver = self.health_events.subscribe();
        let mut snapshot: Vec<HealthChange> =
            self.published.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        snapshot.sort_by_key(|change| change.seq);
        (snapshot, receiver)
    }

    /// Publishes every channel whose state differs from what was published last.
    fn publish_health(&self) {
        let current = self.health();
        let mut published = self.published.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changes = Vec::new();
        for health in &current {
            let same = published.get(&health.id).is_some_and(|last| last.state == health.state);
            if !same {
                changes.push((health.id, health.channel_type.clone(), health.state, health.last_error.clone()));
            }
        }
        let gone: Vec<(Uuid, String)> = published
            .values()
            .filter(|last| last.state != ChannelState::Stopped && !current.iter().any(|h| h.id == last.channel_id))
            .map(|last| (last.channel_id, last.channel_type.clone()))
            .collect();
        changes.extend(gone.into_iter().map(|(id, kind)| (id, kind, ChannelState::Stopped, None)));
        for (channel_id, channel_type, state, last_error) in changes {
            let seq = self.health_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let change = HealthChange { seq, channel_id, channel_type, state, last_error };
            tracing::info!(%channel_id, state = %state, error = ?change.last_error, "channel health changed");
            published.insert(channel_id, change.clone());
            // No subscriber is fine: nobody is watching.
            let _ = self.health_events.send(change);
        }
    }

    /// Re-evaluates health whenever something was recorded, and every few seconds.
    async fn watch_health(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let recorded = self.health_changed.notified();
            self.publish_health();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = recorded => {}
                () = tokio::time::sleep(HEALTH_RECHECK) => {}
            }
        }
    }

    /// Supervises until `shutdown` fires, then stops every channel.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(self.clone().watch_health(shutdown.clone()));
        let mut notifications = self.store.subscribe();
        if !self.store.is_postgres() {
            // SQLite: this is the only process, so a message left `sending` was cut off by a crash.
            match self.store.reclaim_outbox_after_restart().await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "outbox messages interrupted by a crash are sent again"),
                Err(err) => tracing::warn!(error = %err, "reclaiming interrupted outbox messages failed"),
            }
        }
        loop {
            if let Err(err) = self.reconcile().await {
                tracing::warn!(error = %err, "reading channels failed");
            }
            self.probe();
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = changed(&mut notifications) => {}
            }
        }
        for (_, slot) in self.slots().drain() {
            slot.stop();
        }
        self.publish_health();
    }

    /// Starts, restarts or stops channels so that exactly the enabled ones run with their current
    /// settings.
    pub async fn reconcile(&self) -> Result<(), cortex_store::StoreError> {
        let channels = self.store.channels().await?;
        let wanted: HashMap<Uuid, Channel> =
            channels.into_iter().filter(|channel| channel.enabled).map(|channel| (channel.id, channel)).collect();
        let mut slots = self.slots();
        slots.retain(|id, slot| {
            let keep = wanted.get(id).is_some_and(|channel| channel.updated_at == slot.version());
            if !keep {
                slot.stop();
            }
            keep
        });
        for (id, channel) in wanted {
            if slots.contains_key(&id) {
                continue;
            }
            let slot = match self.start(channel.clone()) {
                Ok(run) => Slot::Running(run),
                Err(reason) => {
                    tracing::warn!(channel_id = %id, error = %reason, "channel cannot start");
                    Slot::Broken { version: channel.updated_at, channel, reason }
                }
            };
            slots.insert(id, slot);
        }
        drop(slots);
        self.health_changed.notify_one();
        Ok(())
    }

    /// Runs every channel's identity call on its own task (a slow platform never delays the others) and
    /// records the outcome for [`Supervisor::health`].
    fn probe(&self) {
        for slot in self.slots().values() {
            let Slot::Running(run) = slot else { continue };
            let (adapter, probe, cancel, id) =
                (run.adapter.clone(), run.probe.clone(), run.cancel.clone(), run.channel.id);
            let changed = self.health_changed.clone();
            tokio::spawn(async move {
                let outcome = tokio::select! {
                    () = cancel.cancelled() => return,
                    outcome = tokio::time::timeout(PROBE_TIMEOUT, adapter.verify()) => outcome,
                };
                let failure = match outcome {
                    Ok(Ok(_)) => None,
                    Ok(Err(err)) => Some(format!("health probe failed: {err}")),
                    Err(_) => Some(format!("health probe got no answer within {} s", PROBE_TIMEOUT.as_secs())),
                };
                if let Some(failure) = &failure {
                    tracing::warn!(channel_id = %id, error = %failure, "channel health probe failed");
                }
                *probe.lock().unwrap_or_else(PoisonError::into_inner) = failure;
                changed.notify_one();
            });
        }
    }

    fn start(&self, channel: Channel) -> Result<Running, String> {
        let adapter = self.build(&channel)?;
        let recorded = Arc::new(Notify::new());
        let sink = Arc::new(StoreSink::new(self.store.clone(), channel.id, recorded.clone()));
        let status = Arc::new(Mutex::new((ChannelState::Starting, None)));
        let cancel = CancellationToken::new();
        tokio::spawn(receive_loop(ReceiveLoop {
            store: self.store.clone(),
            channel_id: channel.id,
            holder: self.holder,
            adapter: adapter.clone(),
            sink: sink.clone(),
            status: status.clone(),
            changed: self.health_changed.clone(),
            cancel: cancel.clone(),
        }));
        tokio::spawn(route_loop(self.store.clone(), channel.clone(), adapter.clone(), recorded, cancel.clone()));
        tokio::spawn(crate::delivery::run(self.store.clone(), channel.id, adapter.clone(), cancel.clone()));
        if !adapter.receives_by_connection() {
            // Connection channels run it inside their receive lease (see `receive_loop`).
            let owner = crate::typing::Owner::TypingLease(self.holder);
            tokio::spawn(crate::typing::run(self.store.clone(), channel.id, adapter.clone(), owner, cancel.clone()));
        }
        crate::progress::spawn(self.store.clone(), channel.clone(), adapter.clone(), cancel.clone());
        tracing::info!(channel_id = %channel.id, channel = %channel.name, "channel started");
        let probe = Arc::new(Mutex::new(None));
        Ok(Running { version: channel.updated_at, channel, adapter, sink, status, probe, cancel })
    }

    /// The adapter a channel row describes, with its secrets decrypted.
    fn build(&self, channel: &Channel) -> Result<Arc<dyn ChannelAdapter>, String> {
        let secrets = match &channel.secrets_enc {
            Some(enc) => self
                .cipher
                .decrypt_json(&SecretRef::new("channel", "secrets_enc", channel.id), enc)
                .map_err(|err| format!("cannot decrypt the channel's secrets: {err}"))?,
            None => BTreeMap::new(),
        };
        build_adapter(channel, &secrets, self.http.clone(), self.config.public_url.as_deref())
    }

    /// Verifies and records a webhook request for a running channel of `platform`. Returns the body
    /// the platform expects back, if any.
    pub async fn accept_webhook(
        &self,
        platform: Platform,
        channel_id: Uuid,
        request: WebhookRequest<'_>,
    ) -> Result<WebhookBatch, WebhookRejection> {
        let (adapter, sink) = match self.slots().get(&channel_id) {
            Some(Slot::Running(run)) if run.adapter.platform() == platform => (run.adapter.clone(), run.sink.clone()),
            _ => return Err(WebhookRejection::UnknownChannel),
        };
        let batch = adapter.webhook(request).ok_or(WebhookRejection::UnknownChannel)??;
        sink.alive();
        for event in batch.events.iter().cloned() {
            sink.deliver(event).await.map_err(|err| WebhookRejection::Unavailable(err.0))?;
        }
        Ok(batch)
    }

    /// Verifies and records a webhook request addressed to a platform rather than one channel (WhatsApp's
    /// single webhook URL): every running channel of `platform` checks the signature with its own secret
    /// and keeps the events addressed to it. Refused unless at least one channel verified the request.
    pub async fn accept_platform_webhook(
        &self,
        platform: Platform,
        request: WebhookRequest<'_>,
    ) -> Result<WebhookBatch, WebhookRejection> {
        let running = self.running(platform);
        if running.is_empty() {
            return Err(WebhookRejection::UnknownChannel);
        }
        let mut refusal = None;
        let mut accepted = WebhookBatch::default();
        let mut verified = false;
        for (adapter, sink) in running {
            match adapter.webhook(request) {
                Some(Ok(batch)) => {
                    verified = true;
                    sink.alive();
                    for event in batch.events.iter().cloned() {
                        sink.deliver(event).await.map_err(|err| WebhookRejection::Unavailable(err.0))?;
                    }
                    accepted.events.extend(batch.events);
                }
                Some(Err(err)) => refusal = Some(err),
                None => {}
            }
        }
        match (verified, refusal) {
            (true, _) => Ok(accepted),
            (false, Some(err)) => Err(WebhookRejection::Refused(err)),
            (false, None) => Err(WebhookRejection::UnknownChannel),
        }
    }

    /// The challenge to echo for a subscription handshake, when a running channel of `platform` owns the
    /// token.
    pub fn subscription_challenge(
        &self,
        platform: Platform,
        mode: &str,
        token: &str,
        challenge: &str,
    ) -> Option<String> {
        self.running(platform)
            .into_iter()
            .find_map(|(adapter, _)| adapter.subscription_challenge(mode, token, challenge))
    }

    fn running(&self, platform: Platform) -> Vec<(Arc<dyn ChannelAdapter>, Arc<StoreSink>)> {
        self.slots()
            .values()
            .filter_map(|slot| match slot {
                Slot::Running(run) if run.adapter.platform() == platform => {
                    Some((run.adapter.clone(), run.sink.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Health of every channel this process runs.
    pub fn health(&self) -> Vec<ChannelHealth> {
        let now = self.store.clock().now();
        let mut all: Vec<ChannelHealth> = self
            .slots()
            .values()
            .map(|slot| {
                let run = match slot {
                    Slot::Running(run) => run,
                    Slot::Broken { channel, reason, .. } => {
                        return ChannelHealth {
                            id: channel.id,
                            channel_type: channel.channel_type.clone(),
                            state: ChannelState::Unhealthy,
                            last_error: Some(reason.clone()),
                            last_activity_at: None,
                        };
                    }
                };
                let (state, mut last_error) = run.status.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let probe = run.probe.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let last_activity_at = run.sink.last_alive();
                let state = match state {
                    ChannelState::Healthy if probe.is_some() => {
                        last_error = probe;
                        ChannelState::Unhealthy
                    }
                    ChannelState::Healthy if run.adapter.receives_by_connection() => {
                        if last_activity_at.is_some_and(|at| now - at <= STALE_AFTER) {
                            ChannelState::Healthy
                        } else {
                            last_error =
                                Some(format!("no sign of life from the platform for {} s", STALE_AFTER.num_seconds()));
                            ChannelState::Unhealthy
                        }
                    }
                    other => other,
                };
                ChannelHealth {
                    id: run.channel.id,
                    channel_type: run.channel.channel_type.clone(),
                    state,
                    last_error,
                    last_activity_at,
                }
            })
            .collect();
        all.sort_by_key(|health| health.id);
        all
    }
}

/// Returns when channels may have changed (or notifications were missed).
async fn changed(notifications: &mut broadcast::Receiver<Notification>) {
    loop {
        match notifications.recv().await {
            Ok(Notification::ChannelChanged { .. } | Notification::Resync)
            | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Builds the adapter for a channel row: `config` holds the non-secret settings, `secrets` the
/// decrypted ones.
pub fn build_adapter(
    channel: &Channel,
    secrets: &BTreeMap<String, String>,
    http: reqwest::Client,
    public_url: Option<&str>,
) -> Result<Arc<dyn ChannelAdapter>, String> {
    let setting = |key: &str| channel.config.get(key).and_then(serde_json::Value::as_str);
    match channel.channel_type.parse::<Platform>() {
        Ok(Platform::Telegram) => {
            let token = secrets.get("bot_token").ok_or("the channel has no bot_token")?.clone();
            let mode = match setting("mode").unwrap_or("polling") {
                "polling" => TelegramMode::Polling {
                    timeout: Duration::from_secs(
                        channel.config.get("poll_timeout_seconds").and_then(serde_json::Value::as_u64).unwrap_or(30),
                    ),
                },
                "webhook" => {
                    let require_secret =
                        channel.config.get("require_secret").and_then(serde_json::Value::as_bool).unwrap_or(true);
                    TelegramMode::Webhook {
                        url: public_url
                            .map(|base| format!("{}/webhooks/telegram/{}", base.trim_end_matches('/'), channel.id)),
                        secret: if require_secret { secrets.get("webhook_secret").cloned() } else { None },
                    }
                }
                other => return Err(format!("unknown Telegram mode `{other}`")),
            };
            Ok(Arc::new(TelegramAdapter::new(
                http,
                TelegramConfig {
                    channel_id: channel.id,
                    api_base: setting("api_base").unwrap_or(crate::telegram::DEFAULT_API_BASE).to_owned(),
                    token,
                    mode,
                },
            )))
        }
        Ok(Platform::Discord) => {
            let token = secrets.get("bot_token").ok_or("the channel has no bot_token")?.clone();
            Ok(Arc::new(DiscordAdapter::new(
                http,
                DiscordConfig {
                    channel_id: channel.id,
                    api_base: setting("api_base").unwrap_or(crate::discord::DEFAULT_API_BASE).to_owned(),
                    gateway_url: setting("gateway_url").map(str::to_owned),
                    token,
                },
            )))
        }
        Ok(Platform::Slack) => {
            let bot_token = secrets.get("bot_token").ok_or("the channel has no bot_token")?.clone();
            let app_token = secrets.get("app_token").cloned();
            let signing_secret = secrets.get("signing_secret").cloned();
            if app_token.is_none() && signing_secret.is_none() {
                return Err("a Slack channel needs an app_token (Socket Mode) or a signing_secret (Events API)".into());
            }
            Ok(Arc::new(SlackAdapter::new(
                http,
                SlackConfig {
                    channel_id: channel.id,
                    api_base: setting("api_base").unwrap_or(crate::slack::DEFAULT_API_BASE).to_owned(),
                    bot_token,
                    app_token,
                    signing_secret,
                },
            )))
        }
        Ok(Platform::WhatsApp) => {
            let secret = |key: &str| secrets.get(key).cloned().ok_or_else(|| format!("the channel has no {key}"));
            Ok(Arc::new(WhatsAppAdapter::new(
                http,
                WhatsAppConfig {
                    channel_id: channel.id,
                    api_base: setting("api_base").unwrap_or(crate::whatsapp::DEFAULT_API_BASE).to_owned(),
                    phone_number_id: setting("phone_number_id").ok_or("the channel has no phone_number_id")?.to_owned(),
                    access_token: secret("access_token")?,
                    app_secret: secret("app_secret")?,
                    verify_token: secret("verify_token")?,
                },
            )))
        }
        Err(err) => Err(err.to_string()),
    }
}

struct ReceiveLoop {
    store: Store,
    channel_id: Uuid,
    holder: Uuid,
    adapter: Arc<dyn ChannelAdapter>,
    sink: Arc<StoreSink>,
    status: Arc<Mutex<(ChannelState, Option<String>)>>,
    /// The supervisor's health watcher, told after every state recorded here.
    changed: Arc<Notify>,
    cancel: CancellationToken,
}

impl ReceiveLoop {
    fn set(&self, state: ChannelState, error: Option<String>) {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = (state, error);
        self.changed.notify_one();
    }

    /// Sleeps unless cancelled; `false` when cancelled.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }
}

async fn receive_loop(run: ReceiveLoop) {
    let lease = format!("channel:{}", run.channel_id);
    let exclusive = run.adapter.receives_by_connection();
    let mut failures: u32 = 0;
    while !run.cancel.is_cancelled() {
        if exclusive {
            match run.store.acquire_lease(&lease, run.holder, LEASE_TTL).await {
                Ok(true) => {}
                Ok(false) => {
                    // Another process receives for this channel; take over if it stops renewing.
                    run.set(ChannelState::Starting, Some("another process holds the receive lease".into()));
                    if !run.pause(LEASE_RENEW).await {
                        break;
                    }
                    continue;
                }
                Err(err) => {
                    run.set(ChannelState::Unhealthy, Some(format!("cannot take the receive lease: {err}")));
                    if !run.pause(LEASE_RENEW).await {
                        break;
                    }
                    continue;
                }
            }
        }
        run.set(ChannelState::Healthy, None);
        let attempt = run.cancel.child_token();
        let renewal =
            exclusive.then(|| tokio::spawn(renew(run.store.clone(), lease.clone(), run.holder, attempt.clone())));
        if exclusive {
            // The lease holder is the one process that shows the channel's typing indicator.
            let owner = crate::typing::Owner::ReceiveLease;
            tokio::spawn(crate::typing::run(
                run.store.clone(),
                run.channel_id,
                run.adapter.clone(),
                owner,
                attempt.clone(),
            ));
        }
        let sink: Arc<dyn InboundSink> = run.sink.clone();
        // A connection that goes quiet (a hung poll, a socket that stopped answering) is dropped and
        // restarted like a failed one.
        let result = tokio::select! {
            result = run.adapter.run(sink, attempt.clone()) => result,
            () = watchdog(&run.sink), if exclusive => Err(AdapterError::Unavailable(format!(
                "no sign of life from the platform for {} s; reconnecting",
                QUIET_LIMIT.as_secs()
            ))),
        };
        attempt.cancel();
        if let Some(renewal) = renewal {
            renewal.abort();
        }
        if run.cancel.is_cancelled() {
            break;
        }
        match result {
            Ok(()) => failures = 0,
            Err(err) => {
                failures += 1;
                let message = err.to_string();
                tracing::warn!(channel_id = %run.channel_id, failures, error = %message, "channel receive loop failed");
                let unauthorized = matches!(err, AdapterError::Unauthorized(_));
                if failures >= CIRCUIT_FAILURES || unauthorized {
                    run.set(ChannelState::CircuitOpen, Some(message));
                    failures = 0;
                    if !run.pause(CIRCUIT_OPEN).await {
                        break;
                    }
                } else {
                    run.set(ChannelState::Recovering, Some(message));
                    if !run.pause(restart_backoff(failures)).await {
                        break;
                    }
                }
            }
        }
    }
    if exclusive {
        let _ = run.store.release_lease(&lease, run.holder).await;
    }
    run.set(ChannelState::Stopped, None);
}

/// Returns once the sink saw no sign of life for [`QUIET_LIMIT`] (monotonic time, so a test clock held
/// still never trips it).
async fn watchdog(sink: &StoreSink) {
    let mut seen = sink.signs_of_life();
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(WATCHDOG_TICK).await;
        let now = sink.signs_of_life();
        if now != seen {
            seen = now;
            quiet_since = tokio::time::Instant::now();
        } else if quiet_since.elapsed() >= QUIET_LIMIT {
            return;
        }
    }
}

/// Renews the receive lease every 10 s; cancels the attempt when the lease is lost.
async fn renew(store: Store, lease: String, holder: Uuid, attempt: CancellationToken) {
    loop {
        tokio::select! {
            () = attempt.cancelled() => return,
            () = tokio::time::sleep(LEASE_RENEW) => {}
        }
        match store.acquire_lease(&lease, holder, LEASE_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%lease, "receive lease lost; stopping this receiver");
                attempt.cancel();
                return;
            }
            Err(err) => tracing::warn!(%lease, error = %err, "renewing the receive lease failed"),
        }
    }
}

/// `min(30 s, 1 s × 2^(n−1))` ± 20 %.
pub fn restart_backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(30));
    base.mul_f64(rand_jitter())
}

fn rand_jitter() -> f64 {
    0.8 + 0.4 * rand::random::<f64>()
}

/// Routes the channel's recorded messages as they arrive (and every few seconds, for rows recorded by
/// other processes' webhooks or left over from a crash).
async fn route_loop(
    store: Store,
    channel: Channel,
    adapter: Arc<dyn ChannelAdapter>,
    recorded: Arc<Notify>,
    cancel: CancellationToken,
) {
    let router = Router::new(store);
    loop {
        let woken = recorded.notified();
        if let Err(err) = router.route_pending(&channel, adapter.as_ref()).await {
            tracing::warn!(channel_id = %channel.id, error = %err, "routing failed; retrying");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = woken => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_grows_to_thirty_seconds_with_jitter() {
        for (failures, base) in [(1u32, 1.0f64), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (12, 30.0)] {
            let secs = restart_backoff(failures).as_secs_f64();
            assert!(secs >= base * 0.8 - 1e-9 && secs <= base * 1.2 + 1e-9, "{failures}: {secs}");
        }
    }
}
