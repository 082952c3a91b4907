//! The session buffer (SPEC §5.5): an append-only JSONL log per job attempt for diagnostics and replay.
//!
//! Layout: `<data_dir>/sessions/<job_id>/session-NNN.jsonl` (NNN = attempt, zero-padded) plus
//! `metadata.json`. Each line is one envelope `{version, timestamp, job_id, session_id, agent_id, sequence,
//! type, data, crc32}` in canonical JSON, where `crc32` is the CRC-32 (IEEE) of the canonical JSON of the
//! envelope without that field. Lines are appended after each model response and tool result; the file is
//! fsynced on `CHECKPOINT` and `SESSION_END` and at least every 30 s while it is written. A writer task per
//! run does the file IO, batching queued records, so the loop never waits for the disk; the run waits only
//! at its end, until its records are written.
//!
//! The database stays authoritative: a buffer that cannot be written is logged once and switched off, and
//! nothing else fails. [`read_buffer`] skips a truncated or CRC-invalid **last** line (a crash mid-write)
//! and reports it; any other bad line is an error in the report.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cortex_core::Timestamp;
use cortex_core::checkpoint::canonical_json;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Envelope version written by this code.
pub const BUFFER_VERSION: &str = "1.0";
/// Longest time appended lines may stay unsynced.
const SYNC_EVERY: Duration = Duration::from_secs(30);
const METADATA_FILE: &str = "metadata.json";

/// The record types of SPEC §5.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordType {
    SessionStart,
    LlmRequest,
    LlmResponse,
    ToolCall,
    ToolResult,
    Checkpoint,
    Error,
    Steering,
    ApprovalRequest,
    ApprovalDecision,
    SessionEnd,
}

impl RecordType {
    /// Records after which the file is fsynced.
    fn syncs(self) -> bool {
        matches!(self, Self::Checkpoint | Self::SessionEnd)
    }
}

/// The directory holding a job's buffer files.
pub fn buffer_dir(data_dir: &Path, job_id: Uuid) -> PathBuf {
    data_dir.join("sessions").join(job_id.to_string())
}

/// Who a buffer belongs to; written to `metadata.json` and stamped on every line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BufferMeta {
    pub job_id: Uuid,
    pub agent_id: Uuid,
    pub session_id: Option<Uuid>,
    pub attempt: u32,
    pub provider: String,
    pub model: String,
    pub started_at: Timestamp,
}

/// What the run asks of its writer task.
enum Command {
    Record {
        record_type: RecordType,
        timestamp: Timestamp,
        data: Value,
    },
    /// Reply once every record sent before it is written.
    Close(oneshot::Sender<()>),
}

/// The buffer of one run: records go to a writer task through a channel, so file IO (and fsync) never
/// holds up the loop.
pub(crate) struct SessionBuffer {
    commands: mpsc::UnboundedSender<Command>,
}

impl SessionBuffer {
    /// Starts the writer for the attempt's file under `data_dir` (opened, or continued after a
    /// suspension). Problems are logged by the writer and switch the buffer off; the run never fails.
    pub(crate) fn open(data_dir: &Path, meta: BufferMeta) -> SessionBuffer {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_records(buffer_dir(data_dir, meta.job_id), meta, receiver));
        SessionBuffer { commands }
    }

    /// Queues one record.
    pub(crate) fn append(&self, record_type: RecordType, timestamp: Timestamp, data: Value) {
        let _ = self.commands.send(Command::Record { record_type, timestamp, data });
    }

    /// Waits until every queued record is written (the final fsync may still be in flight).
    pub(crate) async fn close(&self) {
        let (reply, written) = oneshot::channel();
        if self.commands.send(Command::Close(reply)).is_ok() {
            let _ = written.await;
        }
    }
}

/// An open buffer file and where its sequence stands.
struct Writer {
    file: Arc<std::fs::File>,
    meta: BufferMeta,
    sequence: u64,
    last_sync: Instant,
}

/// The writer task: batches whatever is queued into one write, then fsyncs in the background when a
/// record asks for it or the last sync is 30 s old.
async fn write_records(dir: PathBuf, meta: BufferMeta, mut commands: mpsc::UnboundedReceiver<Command>) {
    let opened = tokio::task::spawn_blocking(move || open_writer(&dir, meta)).await;
    let mut writer = match opened.map_err(std::io::Error::other).and_then(|result| result) {
        Ok(writer) => Some(writer),
        Err(err) => {
            tracing::warn!(error = %err, "session buffer unavailable; continuing without it");
            None
        }
    };
    while let Some(first) = commands.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = commands.try_recv() {
            batch.push(next);
        }
        let mut lines = String::new();
        let mut sync = false;
        let mut replies = Vec::new();
        for command in batch {
            match command {
                Command::Record { record_type, timestamp, data } => {
                    if let Some(writer) = &mut writer {
                        lines.push_str(&envelope(&writer.meta, writer.sequence, record_type, timestamp, data));
                        writer.sequence += 1;
                        sync |= record_type.syncs();
                    }
                }
                Command::Close(reply) => replies.push(reply),
            }
        }
        if let Some(current) = writer.take() {
            writer = write_batch(current, lines, sync).await;
        }
        for reply in replies {
            let _ = reply.send(());
        }
    }
}

/// Writes one batch; `None` (buffer off) after a failure.
async fn write_batch(mut writer: Writer, lines: String, sync: bool) -> Option<Writer> {
    let file = writer.file.clone();
    let written = tokio::task::spawn_blocking(move || (&*file).write_all(lines.as_bytes())).await;
    if let Err(err) = written.map_err(std::io::Error::other).and_then(|result| result) {
        tracing::warn!(error = %err, "session buffer write failed; switching it off for this run");
        return None;
    }
    if sync || writer.last_sync.elapsed() >= SYNC_EVERY {
        writer.last_sync = Instant::now();
        let file = writer.file.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(err) = file.sync_data() {
                tracing::warn!(error = %err, "session buffer fsync failed");
            }
        });
    }
    Some(writer)
}

/// Options creating a file only its owner can read: buffers hold whole conversations.
fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).mode(0o600);
    options
}

/// Opens the attempt's file for appending, cutting a partial last line left by a crash, and finds the
/// next sequence number of the job.
fn open_writer(dir: &Path, meta: BufferMeta) -> std::io::Result<Writer> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let metadata = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
    private_file().truncate(true).open(dir.join(METADATA_FILE))?.write_all(&metadata)?;
    let path = dir.join(format!("session-{:03}.jsonl", meta.attempt));
    if let Ok(existing) = std::fs::read(&path) {
        let keep = existing.iter().rposition(|byte| *byte == b'\n').map_or(0, |at| at + 1);
        if keep < existing.len() {
            std::fs::OpenOptions::new().write(true).open(&path)?.set_len(keep as u64)?;
        }
    }
    let sequence = read_buffer(dir).records.iter().map(|record| record.sequence + 1).max().unwrap_or(0);
    let file = private_file().append(true).open(&path)?;
    Ok(Writer { file: Arc::new(file), meta, sequence, last_sync: Instant::now() })
}

/// Deletes the buffers of jobs whose newest file was last written more than `keep` before `now`; returns how
/// many job directories were removed. Blocking file IO, run by the retention pass (`CORTEX_RETENTION_DAYS`).
pub fn prune_buffers(data_dir: &Path, now: std::time::SystemTime, keep: Duration) -> std::io::Result<usize> {
    let sessions = data_dir.join("sessions");
    let entries = match std::fs::read_dir(&sessions) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let newest = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|file| file.metadata().and_then(|meta| meta.modified()).ok())
            .max();
        let stale = newest.is_none_or(|modified| now.duration_since(modified).is_ok_and(|age| age > keep));
        if stale {
            std::fs::remove_dir_all(&dir)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// One line: the envelope in canonical JSON with its CRC, newline-terminated. The CRC covers the
/// canonical form without `crc32`; keys are sorted, so `crc32` goes right after the first key, `agent_id`
/// (a UUID: no comma inside), and the record is serialised once.
fn envelope(meta: &BufferMeta, sequence: u64, record_type: RecordType, timestamp: Timestamp, data: Value) -> String {
    let object = json!({
        "version": BUFFER_VERSION,
        "timestamp": timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "job_id": meta.job_id,
        "session_id": meta.session_id,
        "agent_id": meta.agent_id,
        "sequence": sequence,
        "type": record_type,
        "data": data,
    });
    let canonical = canonical_json(&object);
    let crc = crc32fast::hash(canonical.as_bytes());
    let (agent, rest) = canonical.split_at(canonical.find(',').unwrap_or(canonical.len()));
    debug_assert!(agent.starts_with("{\"agent_id\":"), "agent_id is the first key: {agent}");
    format!("{agent},\"crc32\":{crc}{rest}\n")
}

/// One valid line of a buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferRecord {
    pub version: String,
    pub timestamp: String,
    pub job_id: Uuid,
    pub session_id: Option<Uuid>,
    pub agent_id: Uuid,
    pub sequence: u64,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    pub data: Value,
}

/// A line that was not used, with where it was and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineProblem {
    pub file: String,
    /// 1-based line number (0 for a problem with the file itself).
    pub line: usize,
    pub reason: String,
}

/// Everything readable from a buffer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BufferReport {
    /// `metadata.json`, when reading a job directory that has one.
    pub metadata: Option<Value>,
    /// Valid records, file by file in attempt order, each file in line order.
    pub records: Vec<BufferRecord>,
    /// Truncated or CRC-invalid last lines (crash mid-write), skipped as expected.
    pub skipped_tail: Vec<LineProblem>,
    /// Any other unreadable line or file: real corruption.
    pub errors: Vec<LineProblem>,
}

/// Reads a job's buffer directory (every `session-*.jsonl` and `metadata.json`) or a single buffer file.
/// Blocking file IO: call it from a blocking context (`spawn_blocking`) in async code.
pub fn read_buffer(path: &Path) -> BufferReport {
    let mut report = BufferReport::default();
    if path.is_dir() {
        report.metadata =
            std::fs::read(path.join(METADATA_FILE)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let mut files: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(entries) => entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|file| {
                    file.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| name.starts_with("session-") && name.ends_with(".jsonl"))
                })
                .collect(),
            Err(err) => {
                report.errors.push(problem(path, 0, format!("cannot list the directory: {err}")));
                return report;
            }
        };
        files.sort();
        for file in files {
            read_file(&file, &mut report);
        }
    } else {
        read_file(path, &mut report);
    }
    report
}

fn read_file(path: &Path, report: &mut BufferReport) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            report.errors.push(problem(path, 0, format!("cannot read the file: {err}")));
            return;
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.split('\n').collect();
    let last_content = lines.iter().rposition(|line| !line.trim().is_empty());
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(record) => report.records.push(record),
            Err(reason) if Some(index) == last_content => report.skipped_tail.push(problem(path, index + 1, reason)),
            Err(reason) => report.errors.push(problem(path, index + 1, reason)),
        }
    }
}

fn problem(path: &Path, line: usize, reason: String) -> LineProblem {
    LineProblem { file: path.display().to_string(), line, reason }
}

/// Verifies the CRC of one line and decodes it.
fn parse_line(line: &str) -> Result<BufferRecord, String> {
    let value: Value = serde_json::from_str(line).map_err(|err| format!("not JSON (truncated?): {err}"))?;
    let Value::Object(mut object) = value else { return Err("not a JSON object".into()) };
    let stored = object.remove("crc32").and_then(|crc| crc.as_u64()).ok_or("no crc32 field")?;
    let computed = u64::from(crc32fast::hash(canonical_json(&Value::Object(object.clone())).as_bytes()));
    if stored != computed {
        return Err(format!("crc32 mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    serde_json::from_value(Value::Object(object)).map_err(|err| format!("not an envelope: {err}"))
}

#[cfg(test)]
mod tests;
