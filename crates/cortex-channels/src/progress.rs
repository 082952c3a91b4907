//! Progress of long replies in chat (issue 13, point 8): while a chat job of this channel streams model
//! output (`llm.delta` events), the chat sees it grow. Telegram, Discord and Slack get one draft message,
//! posted once there is enough text (a finished paragraph, or 1 s of store-clock time after the first
//! text) and then edited with the text so far; WhatsApp, which cannot edit, gets each finished paragraph
//! as a message of its own. Calls to one chat are at least 1 s apart (store clock), link previews off.
//!
//! Honesty and durability: progress is best effort and never the reply. The reply stays the outbox row
//! written in the transaction that ends the job; its delivery (`delivery.rs`) reads the job's
//! `reply_draft` row and edits the draft with the final text (or, on WhatsApp, sends only what the
//! chunks did not already say), so a reply is never posted twice, also after a restart. A lost progress
//! edit costs nothing; the one thing that may be left behind is a draft posted by a process that died
//! before recording its id (then the reply arrives as a new message below it).
//!
//! Driven by events, not a timer: the task wakes on the store's event notifications (a job of another
//! channel costs one job read, cached), and sleeps until the next edit is due only while a draft has
//! text to show. With several processes, all follow a job until one creates its draft row; that one
//! streams it to the end (`Store::begin_reply_draft`), the others let it be. The setting
//! `stream_replies: false` on a channel switches progress off for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cortex_core::Timestamp;
use cortex_core::event::EventType;
use cortex_store::channels::Channel;
use cortex_store::events::EventScope;
use cortex_store::{Notification, Store, StoreError};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapter::{ChannelAdapter, SendError};
use crate::text::split;
use crate::types::{ChatRef, OutboundMessage, Platform};

/// Least time between two progress calls to one chat.
pub const MIN_INTERVAL: chrono::Duration = chrono::Duration::seconds(1);
/// How long a progress call may be in flight before the final delivery stops waiting for it.
const CALL_DEADLINE: chrono::Duration = chrono::Duration::seconds(15);
/// Events read per query.
const READ_BATCH: i64 = 500;
/// Jobs remembered as not ours before the memory is dropped (each costs one read when seen again).
const IGNORED_CAP: usize = 4096;
/// How soon events held back by the PostgreSQL visibility watermark are read again.
const REREAD: Duration = Duration::from_millis(20);

/// Whether `platform` can edit a sent message (else progress goes out as paragraph chunks).
pub fn edits(platform: Platform) -> bool {
    platform != Platform::WhatsApp
}

/// Whether the channel streams replies: its `stream_replies` setting, on unless set to `false`.
pub fn streams_replies(channel: &Channel) -> bool {
    channel.config.get("stream_replies").and_then(Value::as_bool).unwrap_or(true)
}

/// The text of a finished paragraph or more: everything up to the last blank line, inclusive.
fn finished_paragraphs(text: &str) -> &str {
    text.rfind("\n\n").map_or("", |end| &text[..end + 2])
}

#[derive(Debug, Deserialize)]
struct Target {
    chat: ChatRef,
    #[serde(default)]
    reply_to: Option<String>,
}

/// What this process knows of a job's draft.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Draft {
    /// No draft row yet.
    None,
    /// This task owns the draft row: the message ids and the text the platform shows.
    Ours { ids: Vec<String>, shown: String },
    /// Another process (or an earlier run) owns it, or it failed for good: leave it be.
    Elsewhere,
}

/// A chat job of this channel being followed.
#[derive(Debug)]
struct Stream {
    chat: ChatRef,
    reply_to: Option<String>,
    /// The last event read.
    after: i64,
    turn: i64,
    /// The model's text of the current turn so far.
    text: String,
    /// When the turn's first text was written (store clock).
    first_text_at: Option<Timestamp>,
    draft: Draft,
    /// Events wait behind the visibility watermark: read again soon.
    reread: bool,
}

impl Stream {
    fn draft_ids(&self) -> &[String] {
        match &self.draft {
            Draft::Ours { ids, .. } => ids,
            _ => &[],
        }
    }
}

/// The progress state of one channel in this process; [`run`] drives it from notifications.
pub struct Progress {
    store: Store,
    channel_id: Uuid,
    adapter: Arc<dyn ChannelAdapter>,
    holder: Uuid,
    streams: HashMap<Uuid, Stream>,
    /// Jobs seen that are not (or no longer) this channel's to stream.
    ignored: HashSet<Uuid>,
    /// The last progress call per chat (`chat_id`, thread).
    last_call: HashMap<(String, Option<String>), Timestamp>,
}

impl Progress {
    /// Progress of `channel_id` owned as `holder` (one per running channel task).
    pub fn new(store: Store, channel_id: Uuid, adapter: Arc<dyn ChannelAdapter>, holder: Uuid) -> Self {
        Self {
            store,
            channel_id,
            adapter,
            holder,
            streams: HashMap::new(),
            ignored: HashSet::new(),
            last_call: HashMap::new(),
        }
    }

    /// A job wrote events: follow it if it is a chat job of this channel, read them and show what is due.
    pub async fn on_event(&mut self, job_id: Uuid) -> Result<(), StoreError> {
        if self.ignored.contains(&job_id) {
            return Ok(());
        }
        if !self.streams.contains_key(&job_id) {
            match self.adopt(job_id).await? {
                Some(stream) => {
                    self.streams.insert(job_id, stream);
                }
                None => {
                    self.ignore(job_id);
                    return Ok(());
                }
            }
        }
        self.advance(job_id).await
    }

    /// After notifications may have been missed: follows every unfinished chat job of the channel (of
    /// the last day), then reads and shows them.
    pub async fn resync(&mut self) -> Result<(), StoreError> {
        let since = self.store.clock().now() - chrono::Duration::days(1);
        for job_id in self.store.channel_jobs_in_progress(self.channel_id, since).await? {
            self.ignored.remove(&job_id);
            if !self.streams.contains_key(&job_id)
                && let Some(stream) = self.adopt(job_id).await?
            {
                self.streams.insert(job_id, stream);
            }
        }
        self.refresh().await
    }

    /// Reads and shows every followed job (when an edit fell due, or events were held back).
    pub async fn refresh(&mut self) -> Result<(), StoreError> {
        let jobs: Vec<Uuid> = self.streams.keys().copied().collect();
        for job_id in jobs {
            self.advance(job_id).await?;
        }
        Ok(())
    }

    /// When the next progress call falls due, if any is waiting.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.streams.values().filter_map(|stream| self.due(stream)).min()
    }

    fn needs_reread(&self) -> bool {
        self.streams.values().any(|stream| stream.reread)
    }

    fn ignore(&mut self, job_id: Uuid) {
        if self.ignored.len() >= IGNORED_CAP {
            self.ignored.clear();
        }
        self.ignored.insert(job_id);
    }

    /// The stream of `job_id` when it is an unfinished job whose reply goes to this channel.
    async fn adopt(&self, job_id: Uuid) -> Result<Option<Stream>, StoreError> {
        let job = match self.store.get_job(job_id).await {
            Ok(job) => job,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let Some(reply) = job.payload.get("reply") else { return Ok(None) };
        let ours = reply.get("channel_id").and_then(Value::as_str) == Some(self.channel_id.to_string().as_str());
        if !ours || job.status.is_terminal() {
            return Ok(None);
        }
        let Some(target) = reply.get("target").and_then(|target| Target::deserialize(target).ok()) else {
            return Ok(None);
        };
        let draft = match self.store.reply_draft(job_id).await? {
            None => Draft::None,
            Some(row) if row.holder == self.holder && row.status == "streaming" => {
                Draft::Ours { ids: row.platform_message_ids, shown: row.shown_text }
            }
            Some(_) => Draft::Elsewhere,
        };
        Ok(Some(Stream {
            chat: target.chat,
            reply_to: target.reply_to,
            after: 0,
            turn: -1,
            text: String::new(),
            first_text_at: None,
            draft,
            reread: false,
        }))
    }

    /// Reads the job's new events, then makes the progress call if one is due.
    async fn advance(&mut self, job_id: Uuid) -> Result<(), StoreError> {
        let Some(stream) = self.streams.get_mut(&job_id) else { return Ok(()) };
        let mut ended = false;
        loop {
            let read = self.store.read_events(EventScope::Job(job_id), stream.after, READ_BATCH).await?;
            stream.reread = read.pending;
            let full = read.events.len() as i64 == READ_BATCH;
            for event in read.events {
                stream.after = event.seq;
                match event.event_type {
                    EventType::LlmDelta | EventType::LlmMessage => {
                        let turn = event.payload.get("turn").and_then(Value::as_i64).unwrap_or(0);
                        if turn != stream.turn {
                            stream.turn = turn;
                            stream.text.clear();
                            stream.first_text_at = None;
                        }
                        if event.payload.get("reset").and_then(Value::as_bool) == Some(true) {
                            stream.text.clear();
                            stream.first_text_at = None;
                        }
                        if let Some(text) = event.payload.get("text").and_then(Value::as_str) {
                            if event.event_type == EventType::LlmMessage {
                                // The turn's whole text: what the deltas should have added up to.
                                stream.text = text.to_owned();
                            } else {
                                stream.text.push_str(text);
                            }
                            if !stream.text.is_empty() {
                                stream.first_text_at.get_or_insert(event.created_at);
                            }
                        }
                    }
                    EventType::JobState => {
                        let to = event.payload.get("to").and_then(Value::as_str).unwrap_or_default();
                        ended |= to.parse::<cortex_core::job::JobStatus>().is_ok_and(|status| status.is_terminal());
                    }
                    _ => {}
                }
            }
            if !full {
                break;
            }
        }
        if ended {
            // The reply's delivery takes over from here.
            self.streams.remove(&job_id);
            self.ignore(job_id);
            return Ok(());
        }
        let now = self.store.clock().now();
        if let Some(stream) = self.streams.get(&job_id)
            && self.due(stream).is_some_and(|due| due <= now)
        {
            self.call(job_id, now).await?;
        }
        Ok(())
    }

    /// When `stream` has something new to show, the earliest time it may be shown.
    fn due(&self, stream: &Stream) -> Option<Timestamp> {
        let first = stream.first_text_at?;
        let (ids, shown) = match &stream.draft {
            Draft::Elsewhere => return None,
            Draft::None => (&[][..], ""),
            Draft::Ours { ids, shown } => (ids.as_slice(), shown.as_str()),
        };
        let earliest = if edits(self.adapter.platform()) {
            if stream.text.trim().is_empty() || stream.text == shown {
                return None;
            }
            if ids.is_empty() && finished_paragraphs(&stream.text).is_empty() { first + MIN_INTERVAL } else { first }
        } else {
            let finished = finished_paragraphs(&stream.text);
            let fresh = finished.strip_prefix(shown)?;
            if fresh.trim().is_empty() {
                return None;
            }
            first
        };
        let key = (stream.chat.chat_id.clone(), stream.chat.thread_id.clone());
        let chat_free = self.last_call.get(&key).map(|last| *last + MIN_INTERVAL);
        Some(chat_free.map_or(earliest, |free| free.max(earliest)))
    }

    /// Posts or edits the draft (or sends the new chunks) of `job_id`.
    async fn call(&mut self, job_id: Uuid, now: Timestamp) -> Result<(), StoreError> {
        let Some(stream) = self.streams.get_mut(&job_id) else { return Ok(()) };
        let until = now + CALL_DEADLINE;
        let allowed = match &stream.draft {
            Draft::None => self.store.begin_reply_draft(job_id, self.channel_id, self.holder, until).await?,
            Draft::Ours { .. } => self.store.begin_draft_call(job_id, self.holder, until).await?,
            Draft::Elsewhere => false,
        };
        if !allowed {
            // Someone else's draft, or the reply's delivery made it final.
            stream.draft = Draft::Elsewhere;
            return Ok(());
        }
        let (mut ids, shown) = match &stream.draft {
            Draft::Ours { ids, shown } => (ids.clone(), shown.clone()),
            _ => (Vec::new(), String::new()),
        };
        let key = (stream.chat.chat_id.clone(), stream.chat.thread_id.clone());
        self.last_call.insert(key, now);
        let limits = self.adapter.limits();
        let message = |text: String, reply_to: Option<String>| OutboundMessage {
            reply_to,
            ..OutboundMessage::text(stream.chat.clone(), text)
        };
        let (result, new_shown) = if edits(self.adapter.platform()) {
            let text = split(&stream.text, limits.max_text).into_iter().next().unwrap_or_default();
            let result = match ids.first() {
                Some(draft_id) => self.adapter.edit(draft_id, &message(text, None)).await,
                None => match self.adapter.send(&message(text, stream.reply_to.clone())).await {
                    Ok(sent) => {
                        ids.push(sent.platform_message_id);
                        Ok(())
                    }
                    Err(err) => Err(err),
                },
            };
            (result, stream.text.clone())
        } else {
            let finished = finished_paragraphs(&stream.text).to_owned();
            let fresh = finished.strip_prefix(shown.as_str()).unwrap_or_default().trim().to_owned();
            let mut result = Ok(());
            let mut sent_upto = shown.clone();
            for part in split(&fresh, limits.max_text) {
                let reply_to = if ids.is_empty() { stream.reply_to.clone() } else { None };
                match self.adapter.send(&message(part, reply_to)).await {
                    Ok(sent) => ids.push(sent.platform_message_id),
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
            if result.is_ok() {
                sent_upto = finished;
            }
            (result, sent_upto)
        };
        match result {
            Ok(()) => {
                self.store.end_draft_call(job_id, self.holder, Some((&ids[..], new_shown.as_str()))).await?;
                stream.draft = Draft::Ours { ids, shown: new_shown };
            }
            Err(err) => {
                tracing::debug!(%job_id, error = %err, "a progress update of a reply failed");
                let accepted = ids.len() > stream.draft_ids().len();
                // Ids of chunks accepted before the failure are kept with the text shown before them
                // (their text may then come again once, in the final reply).
                let record = accepted.then_some((&ids[..], shown.as_str()));
                self.store.end_draft_call(job_id, self.holder, record).await?;
                stream.draft = if accepted || (err.permanent && !ids.is_empty()) {
                    Draft::Elsewhere
                } else {
                    Draft::Ours { ids, shown }
                };
                self.back_off(&err, now, job_id);
            }
        }
        Ok(())
    }

    /// Keeps the chat quiet for as long as the platform asked after a refusal.
    fn back_off(&mut self, err: &SendError, now: Timestamp, job_id: Uuid) {
        let Some(stream) = self.streams.get(&job_id) else { return };
        let wait = err.retry_after.and_then(|wait| chrono::Duration::from_std(wait).ok()).unwrap_or(MIN_INTERVAL);
        let key = (stream.chat.chat_id.clone(), stream.chat.thread_id.clone());
        self.last_call.insert(key, now + wait - MIN_INTERVAL);
    }
}

/// Follows the channel's chat jobs on a task of its own until `cancel` fires (at once done when
/// `stream_replies` is off). Notifications are subscribed to before this returns, so no event written
/// after the call is missed.
pub fn spawn(
    store: Store,
    channel: Channel,
    adapter: Arc<dyn ChannelAdapter>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let notifications = store.subscribe();
    tokio::spawn(run(store, channel, adapter, notifications, cancel))
}

async fn run(
    store: Store,
    channel: Channel,
    adapter: Arc<dyn ChannelAdapter>,
    mut notifications: broadcast::Receiver<Notification>,
    cancel: CancellationToken,
) {
    if !streams_replies(&channel) {
        return;
    }
    let mut progress = Progress::new(store.clone(), channel.id, adapter, cortex_core::new_id());
    loop {
        let due = progress.next_due();
        let reread = progress.needs_reread();
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            received = notifications.recv() => match received {
                Ok(Notification::Event { job_id: Some(job_id), .. }) => progress.on_event(job_id).await,
                Ok(Notification::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => progress.resync().await,
                Ok(_) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = sleep_until(&store, due) => progress.refresh().await,
            () = tokio::time::sleep(REREAD), if reread => progress.refresh().await,
        };
        if let Err(err) = outcome {
            tracing::debug!(channel_id = %channel.id, error = %err, "following a reply's progress failed");
        }
    }
}

/// Sleeps until `due` by the store's clock, or forever without one.
async fn sleep_until(store: &Store, due: Option<Timestamp>) {
    match due {
        Some(due) => store.clock().sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_paragraphs_end_at_the_last_blank_line() {
        assert_eq!(finished_paragraphs("no break yet"), "");
        assert_eq!(finished_paragraphs("one\n\ntwo"), "one\n\n");
        assert_eq!(finished_paragraphs("one\n\ntwo\n\nthr"), "one\n\ntwo\n\n");
    }
}
