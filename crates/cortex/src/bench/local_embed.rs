//! Local embedding throughput for `cortex bench memory` (issue 16): sentences per second through the
//! in-process model (`CORTEX_EMBEDDINGS=local`), one sentence per call and in batches, plus its load time.
//! Only in builds with the `local-embeddings` feature; the model is the one the server would load
//! (`CORTEX_EMBEDDINGS_MODEL_DIR`, else `models/all-MiniLM-L6-v2` in `CORTEX_DATA_DIR`, default `./cortex-data`).

use std::path::PathBuf;
use std::time::Instant;

use cortex_memory::embed::{DEFAULT_LOCAL_MODEL_DIR, LOCAL_EMBEDDINGS_BUILT, local_embedder, local_model_present};

use super::{Report, millis, rate};

/// Sentences embedded one per call.
const SINGLE: usize = 100;
/// Sentences embedded in batches (the embedder's own batch size).
const BATCHED: usize = 512;

/// Adds `local_embed_*` figures to `report`, or says on stderr why it cannot.
pub(crate) async fn figures(report: &mut Report, sentence: impl Fn(u64) -> String) -> anyhow::Result<()> {
    if !LOCAL_EMBEDDINGS_BUILT {
        eprintln!("local embedding throughput: not measured (built without `--features local-embeddings`)");
        return Ok(());
    }
    let dir = std::env::var_os("CORTEX_EMBEDDINGS_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let data = std::env::var_os("CORTEX_DATA_DIR").map_or_else(|| PathBuf::from("./cortex-data"), PathBuf::from);
        data.join(DEFAULT_LOCAL_MODEL_DIR)
    });
    if !local_model_present(&dir) {
        eprintln!(
            "local embedding throughput: not measured (no model in {}; set CORTEX_EMBEDDINGS_MODEL_DIR)",
            dir.display()
        );
        return Ok(());
    }
    let load = Instant::now();
    let embedder = tokio::task::spawn_blocking(move || local_embedder(&dir)).await??;
    report.figure("local_embed_load_ms", "local embedding model load", millis(load.elapsed()), "ms");
    let sentences: Vec<String> = (0..BATCHED as u64).map(&sentence).collect();
    embedder.embed(&sentences[..1]).await?;
    let single = Instant::now();
    for text in &sentences[..SINGLE] {
        embedder.embed(std::slice::from_ref(text)).await?;
    }
    report.figure(
        "local_embed_single_sentences_per_second",
        format!("local embedding ({}), one sentence per call", embedder.model()),
        rate(SINGLE, single.elapsed()),
        "sentences/s",
    );
    let batched = Instant::now();
    embedder.embed(&sentences).await?;
    report.figure(
        "local_embed_batched_sentences_per_second",
        format!("local embedding ({}), batches of {}", embedder.model(), cortex_memory::embed::LOCAL_BATCH),
        rate(BATCHED, batched.elapsed()),
        "sentences/s",
    );
    Ok(())
}
