//! Unit tests of the `buffer` module.
use super::*;

fn meta(job_id: Uuid, attempt: u32) -> BufferMeta {
    BufferMeta {
        job_id,
        agent_id: Uuid::now_v7(),
        session_id: None,
        attempt,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        started_at: chrono::Utc::now(),
    }
}

async fn write(dir: &Path, job_id: Uuid, attempt: u32, count: usize) {
    let buffer = SessionBuffer::open(dir, meta(job_id, attempt));
    buffer.append(RecordType::SessionStart, chrono::Utc::now(), json!({"attempt": attempt}));
    for n in 1..count {
        buffer.append(RecordType::LlmResponse, chrono::Utc::now(), json!({"n": n, "text": "héllo"}));
    }
    buffer.close().await;
}

#[tokio::test]
async fn records_round_trip_with_valid_crcs_and_one_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let job_id = Uuid::now_v7();
    write(dir.path(), job_id, 1, 3).await;
    write(dir.path(), job_id, 2, 2).await;
    let report = read_buffer(&buffer_dir(dir.path(), job_id));
    assert!(report.errors.is_empty() && report.skipped_tail.is_empty(), "{report:?}");
    let sequences: Vec<u64> = report.records.iter().map(|record| record.sequence).collect();
    assert_eq!(sequences, vec![0, 1, 2, 3, 4]);
    assert_eq!(report.records[0].record_type, RecordType::SessionStart);
    assert_eq!(report.records[1].data["text"], "héllo");
    assert_eq!(report.metadata.unwrap()["attempt"], 2);
    assert!(buffer_dir(dir.path(), job_id).join("session-001.jsonl").exists());
}

#[tokio::test]
async fn a_truncated_last_line_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let job_id = Uuid::now_v7();
    write(dir.path(), job_id, 1, 3).await;
    let file = buffer_dir(dir.path(), job_id).join("session-001.jsonl");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(br#"{"agent_id":"x","data":{"n":4"#);
    std::fs::write(&file, &bytes).unwrap();

    let report = read_buffer(&file);
    assert_eq!(report.records.len(), 3);
    assert_eq!(report.skipped_tail.len(), 1, "{report:?}");
    assert_eq!(report.skipped_tail[0].line, 4);
    assert!(report.errors.is_empty());

    // Continuing the attempt cuts the partial line before appending.
    write(dir.path(), job_id, 1, 1).await;
    let report = read_buffer(&file);
    assert_eq!(report.records.len(), 4);
    assert!(report.skipped_tail.is_empty() && report.errors.is_empty(), "{report:?}");
    assert_eq!(report.records[3].sequence, 3);
}

#[tokio::test]
async fn a_crc_invalid_middle_line_is_an_error_but_a_bad_last_line_is_a_skip() {
    let dir = tempfile::tempdir().unwrap();
    let job_id = Uuid::now_v7();
    write(dir.path(), job_id, 1, 3).await;
    let file = buffer_dir(dir.path(), job_id).join("session-001.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let tampered = text.replacen("\"n\":1", "\"n\":7", 1).replacen("\"n\":2", "\"n\":8", 1);
    std::fs::write(&file, tampered).unwrap();
    let report = read_buffer(&file);
    assert_eq!(report.records.len(), 1);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].line, 2);
    assert!(report.errors[0].reason.contains("crc32 mismatch"));
    assert_eq!(report.skipped_tail.len(), 1);
    assert_eq!(report.skipped_tail[0].line, 3);
}

#[test]
fn a_missing_buffer_is_reported() {
    let report = read_buffer(Path::new("/nonexistent/cortex/buffer.jsonl"));
    assert!(report.records.is_empty());
    assert_eq!(report.errors.len(), 1);
}

#[tokio::test]
async fn old_buffers_are_pruned() {
    const BUFFER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    write(dir.path(), first, 1, 1).await;
    write(dir.path(), second, 1, 1).await;
    let later = std::time::SystemTime::now() + BUFFER_RETENTION + Duration::from_secs(60);
    assert_eq!(prune_buffers(dir.path(), std::time::SystemTime::now(), BUFFER_RETENTION).unwrap(), 0);
    assert_eq!(prune_buffers(dir.path(), later, BUFFER_RETENTION).unwrap(), 2);
    assert!(!buffer_dir(dir.path(), first).exists() && !buffer_dir(dir.path(), second).exists());
    assert_eq!(prune_buffers(&dir.path().join("nowhere"), later, BUFFER_RETENTION).unwrap(), 0);
}

#[test]
fn an_envelope_is_the_canonical_form_with_its_crc_added() {
    let meta = meta(Uuid::now_v7(), 2);
    let data = json!({"text": "a, b", "nested": {"z": 1, "a": [true, null]}});
    let line = envelope(&meta, 7, RecordType::SessionStart, chrono::Utc::now(), data);
    let mut object = serde_json::from_str::<Value>(&line).unwrap();
    let crc = object.as_object_mut().unwrap().remove("crc32").unwrap();
    assert_eq!(crc, json!(crc32fast::hash(canonical_json(&object).as_bytes())));
    object["crc32"] = crc;
    assert_eq!(line, format!("{}\n", canonical_json(&object)), "the two-pass form, byte for byte");
}
