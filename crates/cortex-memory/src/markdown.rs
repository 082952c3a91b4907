//! Markdown memory files (SPEC §9.7): `<data_dir>/agents/<slug>/memory/*.md` are authoritative for the
//! records they produce ("human wins").
//!
//! A file is normalised (CRLF → LF, trailing spaces stripped, runs of 3+ blank lines collapsed to one,
//! trimmed) and cut into chunks: an optional `# Title` starts every heading path; text before the first
//! `##` heading is its own chunk; every `##` heading starts a chunk that keeps its heading line; a chunk over
//! 4096 characters is split at blank lines with the heading repeated (parts after the first get `#2`, `#3`
//! … in their path); a repeated heading in one file gets `~2`, `~3` …; chunks under 32 characters are
//! dropped. A chunk's record id is `UUIDv5(MARKDOWN_NAMESPACE, "<relative path>:<heading path joined by
//! '/'>")`, where the relative path is the file's path under the data dir (`agents/<slug>/memory/…`), so
//! ids differ between agents; change detection compares the SHA-256 of the normalised chunk (the record's
//! `content_hash`). A heading that starts with a type name (`## preference: …`) sets the record type,
//! otherwise `fact`; importance 4, confidence 1.0.
//!
//! [`Memory::sync_markdown`] makes the agent's markdown records equal the files: unchanged hash → skipped,
//! changed → updated and re-embedded, new → inserted, ids no longer produced (also a deleted file) →
//! deleted. Running it twice changes nothing. Syncs of one process are serialised; the records are
//! written with upserts keyed by id, so two processes syncing the same files converge.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cortex_core::memory::MemoryType;
use cortex_store::memory::content_hash;
use cortex_store::memory_markdown::MarkdownChunk;
use serde::Serialize;
use uuid::Uuid;

use crate::error::MemoryError;
use crate::service::Memory;

/// The namespace of markdown record ids (fixed for the project: ids must not change between versions).
pub const MARKDOWN_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b7d_4e58_a0c4_51d2_8e3f_7b19);
/// Longest chunk before it is split at blank lines.
pub const MAX_CHUNK: usize = 4096;
/// Shortest chunk kept.
pub const MIN_CHUNK: usize = 32;
/// Importance of markdown records.
pub const MARKDOWN_IMPORTANCE: i64 = 4;
/// Largest markdown file read (bigger files are skipped with a warning).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One chunk of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// `"<relative path>:<heading path>"`, the name the id is derived from.
    pub name: String,
    pub id: Uuid,
    pub memory_type: MemoryType,
    /// The normalised chunk text (heading line included).
    pub content: String,
}

/// What a sync changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// CRLF → LF, trailing spaces stripped, 3+ blank lines collapsed to one, trimmed.
pub fn normalise(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.split('\n').map(str::trim_end) {
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            match blank_run {
                0 => {}
                1 | 2 => out.push_str(&"\n".repeat(blank_run)),
                _ => out.push('\n'),
            }
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

/// The record type named at the start of a heading (`preference: …`), if any.
fn heading_type(heading: &str) -> Option<MemoryType> {
    let (name, _) = heading.split_once(':')?;
    name.trim().to_ascii_lowercase().parse().ok()
}

/// Splits a long chunk at blank lines into parts of at most [`MAX_CHUNK`] characters, repeating
/// `heading_line` on every part after the first. A paragraph longer than the limit is cut at characters.
fn split_long(text: &str, heading_line: Option<&str>) -> Vec<String> {
    if text.chars().count() <= MAX_CHUNK {
        return vec![text.to_owned()];
    }
    let prefix = heading_line.map(|line| format!("{line}\n\n")).unwrap_or_default();
    let body = match heading_line {
        Some(line) => text.strip_prefix(line).unwrap_or(text).trim_start(),
        None => text,
    };
    let budget = MAX_CHUNK.saturating_sub(prefix.chars().count()).max(1);
    let mut pieces: Vec<String> = Vec::new();
    for paragraph in body.split("\n\n") {
        let chars: Vec<char> = paragraph.chars().collect();
        for piece in chars.chunks(budget) {
            pieces.push(piece.iter().collect());
        }
    }
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    for piece in pieces {
        let joined = if current.is_empty() { piece.clone() } else { format!("{current}\n\n{piece}") };
        if joined.chars().count() > budget && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
            current = piece;
        } else {
            current = joined;
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts.into_iter().map(|part| format!("{prefix}{part}")).collect()
}

/// The chunks of one file; `relative` is its path under the data dir (`/`-separated).
pub fn chunk_file(relative: &str, text: &str) -> Vec<Chunk> {
    let text = normalise(text);
    let mut lines = text.lines().peekable();
    let title = match lines.peek() {
        Some(line) if line.starts_with("# ") => {
            let title = line[2..].trim().to_owned();
            lines.next();
            Some(title)
        }
        _ => None,
    };
    // (heading, lines) sections; the preamble has no heading.
    let mut sections: Vec<(Option<String>, Vec<&str>)> = vec![(None, Vec::new())];
    for line in lines {
        if let Some(heading) = line.strip_prefix("## ") {
            sections.push((Some(heading.trim().to_owned()), vec![line]));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push(line);
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut chunks = Vec::new();
    for (heading, body) in sections {
        let content = body.join("\n").trim().to_owned();
        let mut path: Vec<String> = title.iter().cloned().collect();
        if let Some(heading) = &heading {
            path.push(heading.clone());
        }
        let mut base = path.join("/");
        let occurrence = seen.entry(base.clone()).or_insert(0);
        *occurrence += 1;
        if *occurrence > 1 {
            base = format!("{base}~{occurrence}");
        }
        let memory_type = heading.as_deref().and_then(heading_type).unwrap_or(MemoryType::Fact);
        let heading_line = heading.as_ref().map(|_| body[0]);
        for (index, part) in split_long(&content, heading_line).into_iter().enumerate() {
            let part = part.trim().to_owned();
            if part.chars().count() < MIN_CHUNK {
                continue;
            }
            let suffix = if index == 0 { String::new() } else { format!("#{}", index + 1) };
            let name = format!("{relative}:{base}{suffix}");
            let id = Uuid::new_v5(&MARKDOWN_NAMESPACE, name.as_bytes());
            chunks.push(Chunk { name, id, memory_type, content: part });
        }
    }
    chunks
}

/// The agent's markdown directory under `data_dir`.
pub fn memory_dir(data_dir: &Path, slug: &str) -> PathBuf {
    data_dir.join("agents").join(slug).join("memory")
}

/// Reads every `*.md` file of `dir` (not recursive) into chunks; files that cannot be read (not UTF-8,
/// too large) are skipped with a warning — their records are then deleted, as the file no longer yields
/// them; a missing directory yields nothing.
pub fn read_chunks(data_dir: &Path, slug: &str) -> Vec<Chunk> {
    let dir = memory_dir(data_dir, slug);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    let mut chunks = Vec::new();
    for path in files {
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
        let relative = format!("agents/{slug}/memory/{name}");
        if path.metadata().is_ok_and(|meta| meta.len() > MAX_FILE_BYTES) {
            tracing::warn!(file = %path.display(), "markdown memory file larger than 4 MiB skipped");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => chunks.extend(chunk_file(&relative, &text)),
            Err(err) => tracing::warn!(file = %path.display(), error = %err, "markdown memory file skipped"),
        }
    }
    chunks
}

impl Memory {
    /// Makes the agent's markdown records equal its files (SPEC §9.7) and reports what changed.
    pub async fn sync_markdown(&self, agent_id: Uuid, slug: &str) -> Result<SyncReport, MemoryError> {
        let Some(data_dir) = self.data_dir() else { return Ok(SyncReport::default()) };
        let _serialised = self.sync_lock().lock().await;
        let chunks = {
            let (data_dir, slug) = (data_dir.to_path_buf(), slug.to_owned());
            tokio::task::spawn_blocking(move || read_chunks(&data_dir, &slug)).await.unwrap_or_default()
        };
        let existing: BTreeMap<Uuid, String> = self.store().markdown_memories(agent_id).await?.into_iter().collect();
        let mut report = SyncReport::default();
        let mut wanted: Vec<Uuid> = Vec::with_capacity(chunks.len());
        let mut changed: Vec<&Chunk> = Vec::new();
        for chunk in &chunks {
            if wanted.contains(&chunk.id) {
                continue;
            }
            wanted.push(chunk.id);
            match existing.get(&chunk.id) {
                Some(hash) if *hash == content_hash(&chunk.content) => report.unchanged += 1,
                Some(_) => {
                    report.updated += 1;
                    changed.push(chunk);
                }
                None => {
                    report.created += 1;
                    changed.push(chunk);
                }
            }
        }
        let texts: Vec<String> = changed.iter().map(|chunk| chunk.content.clone()).collect();
        let embeddings = self.embeddings_for(&texts).await;
        let mut tx = self.store().begin().await?;
        for (index, chunk) in changed.iter().enumerate() {
            let row = MarkdownChunk {
                agent_id,
                id: chunk.id,
                memory_type: chunk.memory_type.as_str().to_owned(),
                content: chunk.content.clone(),
                source_ref: chunk.name.clone(),
                importance: MARKDOWN_IMPORTANCE,
                embedding: embeddings.get(index).cloned().flatten(),
            };
            tx.upsert_markdown_memory(&row).await?;
        }
        for id in existing.keys().filter(|id| !wanted.contains(id)) {
            tx.delete_memory(agent_id, *id).await?;
            report.deleted += 1;
        }
        tx.commit().await?;
        if report.created + report.updated + report.deleted > 0 {
            self.index_changed(agent_id).await;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_normalised_and_chunked_by_heading() {
        let text = "# Team\r\nWe build the Cortex control plane together.   \r\n\r\n\r\n\r\n\
                    ## Preference: answers\nAlways answer in metric units, with sources.\n\n\
                    ## People\nAna leads the storage work and reviews migrations.\n## Tiny\nshort\n\
                    ## People\nBruno owns the channel adapters since March.";
        let chunks = chunk_file("agents/a/memory/MEMORY.md", text);
        let names: Vec<&str> = chunks.iter().map(|chunk| chunk.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "agents/a/memory/MEMORY.md:Team",
                "agents/a/memory/MEMORY.md:Team/Preference: answers",
                "agents/a/memory/MEMORY.md:Team/People",
                "agents/a/memory/MEMORY.md:Team/People~2",
            ]
        );
        assert_eq!(chunks[0].content, "We build the Cortex control plane together.");
        assert_eq!(chunks[1].memory_type, MemoryType::Preference);
        assert_eq!(chunks[1].content, "## Preference: answers\nAlways answer in metric units, with sources.");
        assert_eq!(chunks[2].memory_type, MemoryType::Fact);
        assert_eq!(chunks[0].id, Uuid::new_v5(&MARKDOWN_NAMESPACE, b"agents/a/memory/MEMORY.md:Team"));
        assert_ne!(chunk_file("agents/b/memory/MEMORY.md", text)[0].id, chunks[0].id, "ids differ per agent");
        assert_eq!(normalise("a  \r\n\n\n\n\nb\n\nc\n"), "a\n\nb\n\nc");
    }

    #[test]
    fn long_sections_split_at_blank_lines_with_the_heading_repeated() {
        let paragraph = "word ".repeat(300);
        let text = format!("## Notes\n{}\n\n{}\n\n{}", paragraph.trim(), paragraph.trim(), paragraph.trim());
        let chunks = chunk_file("agents/a/memory/notes.md", &text);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert!(
            chunks
                .iter()
                .all(|chunk| chunk.content.starts_with("## Notes\n") && chunk.content.chars().count() <= MAX_CHUNK)
        );
        assert_eq!(chunks[1].name, "agents/a/memory/notes.md:Notes#2");
    }
}
