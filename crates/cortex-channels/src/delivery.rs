//! Outbox delivery for one channel: claim due messages under a lease, split each to the platform's
//! limit, send the parts in order, and mark the row `delivered` with the platform's message ids.
//!
//! A multi-part reply records the ids of the parts already accepted after each one, so a retry or a new
//! claim after a crash continues with the next part (the part in flight at a crash is the one that may
//! arrive twice). Failures retry with backoff `min(60 s, 1 s × 2^(attempt−1))` or the platform's
//! `Retry-After` when longer, up to [`MAX_ATTEMPTS`], then the row is `failed` and visible to operators.
//!
//! A job's reply (or failure notice) whose progress was streamed ([`crate::progress`]) first takes the
//! job's draft over (`reply_draft` turns `final`, so no progress call starts after it; one still in
//! flight makes the row wait until it is done). Then the first part edits the draft instead of being
//! sent, or on WhatsApp the chunks already sent count as parts and only the rest of the reply follows.

use std::sync::Arc;
use std::time::Duration;

use cortex_store::outbox::OutboxItem;
use cortex_store::{Notification, Store, StoreError};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapter::{ChannelAdapter, SendError};
use crate::text::split;
use crate::types::{Button, ChatRef, OutboundMessage};

/// Sends per message before it is `failed` (SPEC §8.6 step 9).
pub const MAX_ATTEMPTS: i64 = 5;
/// How long a claimed message belongs to its sender before another process may take it over.
const LEASE_SECONDS: i64 = 60;
/// Longest pause between checks when nothing is due (notifications usually wake the loop first).
const IDLE_CHECK: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
struct Target {
    chat: ChatRef,
    #[serde(default)]
    reply_to: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    text: Option<String>,
    /// `reply`, `notice`, `failure` (then `error_code` picks the sentence) or `approval` (the notice is
    /// rendered from the request as it stands when sent).
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    buttons: Vec<Button>,
    /// For `kind: approval`: the request whose notice to render.
    #[serde(default)]
    approval_id: Option<Uuid>,
}

/// The user-facing sentence for a failed job: derived from the error code, never the raw provider text.
pub fn failure_sentence(code: Option<&str>) -> &'static str {
    match code {
        Some("cancelled") => "Stopped.",
        Some("attempt_timeout" | "timeout") => "Sorry — that took too long and was stopped. Please try again.",
        Some("budget_exceeded" | "token_budget_exceeded") => "Sorry — the usage limit for this agent was reached.",
        Some("providers_unavailable" | "provider_unavailable") => {
            "Sorry — the model service is unavailable right now. Please try again later."
        }
        _ => "Sorry — something went wrong while answering. Please try again.",
    }
}

/// Backoff before the next attempt after `attempts` sends.
pub fn backoff(attempts: i64, retry_after: Option<Duration>) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 6)).unwrap_or(6);
    let base = Duration::from_secs(2u64.pow(exponent)).min(Duration::from_secs(60));
    retry_after.map_or(base, |asked| asked.max(base))
}

/// Delivers one channel's outbox until `cancel` fires.
pub async fn run(store: Store, channel_id: Uuid, adapter: Arc<dyn ChannelAdapter>, cancel: CancellationToken) {
    let holder = cortex_core::new_id();
    let mut notifications = store.subscribe();
    loop {
        match deliver_due(&store, channel_id, adapter.as_ref(), holder).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(err) => tracing::warn!(%channel_id, error = %err, "outbox delivery failed; retrying"),
        }
        let wait = match store.next_outbox_due(channel_id).await {
            Ok(Some(due)) => (due - store.clock().now()).to_std().unwrap_or(Duration::ZERO).min(IDLE_CHECK),
            _ => IDLE_CHECK,
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = store.clock().sleep(wait) => {}
            () = wake(&mut notifications, channel_id) => {}
        }
    }
}

/// Returns when the channel's outbox may have work (or notifications were missed).
async fn wake(notifications: &mut broadcast::Receiver<Notification>, channel_id: Uuid) {
    loop {
        match notifications.recv().await {
            Ok(Notification::Outbox { channel_id: id }) if id == channel_id => return,
            Ok(Notification::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Claims and sends what is due; returns how many messages were claimed.
pub async fn deliver_due(
    store: &Store,
    channel_id: Uuid,
    adapter: &dyn ChannelAdapter,
    holder: Uuid,
) -> Result<usize, StoreError> {
    let items = store.claim_outbox(channel_id, holder, chrono::Duration::seconds(LEASE_SECONDS), 10).await?;
    let count = items.len();
    for item in items {
        deliver_one(store, adapter, holder, item).await?;
    }
    Ok(count)
}

async fn deliver_one(
    store: &Store,
    adapter: &dyn ChannelAdapter,
    holder: Uuid,
    item: OutboxItem,
) -> Result<(), StoreError> {
    let parsed =
        serde_json::from_value::<Target>(item.target.clone()).map_err(|err| err.to_string()).and_then(|target| {
            Ok((target, serde_json::from_value::<Payload>(item.payload.clone()).map_err(|err| err.to_string())?))
        });
    let (target, payload) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            store.outbox_attempt_failed(item.id, holder, &format!("unreadable outbox row: {err}"), None).await?;
            return Ok(());
        }
    };
    let (text, buttons) = match (payload.kind.as_deref(), payload.approval_id) {
        (Some("failure"), _) => (failure_sentence(payload.error_code.as_deref()).to_owned(), payload.buttons),
        (Some("approval"), Some(approval_id)) => match crate::approvals::render(store, approval_id).await {
            Ok(rendered) => rendered,
            Err(err) if err.is_unavailable() => return Err(err),
            Err(err) => {
                store.outbox_attempt_failed(item.id, holder, &format!("approval notice: {err}"), None).await?;
                return Ok(());
            }
        },
        _ => (payload.text.unwrap_or_default(), payload.buttons),
    };
    // A streamed reply takes its draft over (progress stops touching it) and replaces it.
    let draft = match (payload.kind.as_deref(), item.job_id) {
        (Some("reply" | "failure"), Some(job_id)) => store.finalize_reply_draft(job_id).await?,
        _ => None,
    };
    if let Some(until) =
        draft.as_ref().and_then(|draft| draft.editing_until).filter(|until| *until > store.clock().now())
    {
        // A progress call started before is still in flight; replacing the draft now could be overwritten.
        store
            .outbox_attempt_failed(item.id, holder, "a progress update of the draft is in flight", Some(until))
            .await?;
        return Ok(());
    }
    let streamed = draft.filter(|draft| !draft.platform_message_ids.is_empty());
    let edits = crate::progress::edits(adapter.platform());
    // Platforms that edit: the first part replaces the draft. WhatsApp: the chunks already sent count as
    // delivered parts, and only the rest of the reply goes out (all of it when the reply does not
    // start with what they said).
    let draft_id = streamed.as_ref().filter(|_| edits).and_then(|draft| draft.platform_message_ids.first().cloned());
    let (text, prior) = match streamed.filter(|_| !edits) {
        Some(draft) => match text.strip_prefix(draft.shown_text.as_str()) {
            Some(rest) => (rest.trim_start().to_owned(), draft.platform_message_ids),
            None => (text, Vec::new()),
        },
        None => (text, Vec::new()),
    };
    let limits = adapter.limits();
    let mut parts = split(&text, limits.max_text);
    if !buttons.is_empty()
        && let Some(last) = parts.pop()
    {
        // Buttons go under the last part, which must fit the platform's shorter limit for such messages.
        parts.extend(split(&last, limits.max_text_with_buttons));
    }
    if parts.is_empty() {
        if !prior.is_empty() {
            // The chunks said it all.
            store.outbox_delivered(item.id, holder, &prior.join(",")).await?;
            return Ok(());
        }
        parts.push("(no answer)".to_owned());
    }
    let mut sent: Vec<String> = item
        .platform_message_id
        .as_deref()
        .map(|ids| ids.split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    if sent.is_empty() {
        sent = prior.clone();
    }
    let last = parts.len() - 1;
    for (index, part) in parts.into_iter().enumerate().skip(sent.len().saturating_sub(prior.len())) {
        let message = OutboundMessage {
            chat: target.chat.clone(),
            text: part,
            reply_to: if index == 0 { target.reply_to.clone() } else { None },
            buttons: if index == last { buttons.clone() } else { Vec::new() },
            disable_link_previews: true,
        };
        let accepted = match draft_id.as_deref().filter(|_| index == 0) {
            Some(draft_id) => match adapter.edit(draft_id, &message).await {
                Ok(()) => Ok(draft_id.to_owned()),
                Err(err) if err.permanent => {
                    // The draft is gone or cannot take the text: the reply goes out as a new message.
                    tracing::info!(outbox_id = %item.id, error = %err, "replacing the draft failed; sending the reply");
                    adapter.send(&message).await.map(|accepted| accepted.platform_message_id)
                }
                Err(err) => Err(err),
            },
            None => adapter.send(&message).await.map(|accepted| accepted.platform_message_id),
        };
        match accepted {
            Ok(id) => {
                sent.push(id);
                if index < last && !store.outbox_progress(item.id, holder, &sent.join(",")).await? {
                    return Ok(());
                }
            }
            Err(err) => return record_failure(store, holder, &item, &err).await,
        }
    }
    if !store.outbox_delivered(item.id, holder, &sent.join(",")).await? {
        tracing::warn!(outbox_id = %item.id, "delivered after losing the claim; another sender may repeat it");
    }
    Ok(())
}

async fn record_failure(store: &Store, holder: Uuid, item: &OutboxItem, err: &SendError) -> Result<(), StoreError> {
    let message = match &err.code {
        Some(code) => format!("{code}: {}", err.message),
        None => err.message.clone(),
    };
    let next = if err.permanent || item.attempts >= MAX_ATTEMPTS {
        None
    } else {
        let wait = backoff(item.attempts, err.retry_after);
        Some(store.clock().now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60)))
    };
    tracing::info!(outbox_id = %item.id, attempts = item.attempts, permanent = next.is_none(), error = %message, "outbox send failed");
    store.outbox_attempt_failed(item.id, holder, &message, next).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_honours_longer_retry_after() {
        let secs = |attempts, retry: Option<u64>| backoff(attempts, retry.map(Duration::from_secs)).as_secs();
        assert_eq!([secs(1, None), secs(2, None), secs(3, None), secs(7, None), secs(20, None)], [1, 2, 4, 60, 60]);
        assert_eq!(secs(1, Some(30)), 30);
        assert_eq!(secs(3, Some(1)), 4);
    }

    #[test]
    fn failure_sentences_never_quote_provider_text() {
        assert_eq!(failure_sentence(Some("cancelled")), "Stopped.");
        assert!(failure_sentence(Some("upstream said: secret stuff")).starts_with("Sorry"));
        assert!(failure_sentence(None).starts_with("Sorry"));
    }
}
