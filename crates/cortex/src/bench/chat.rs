//! `cortex bench chat`: the control-plane overhead of one chat turn (issue 5, SPEC §5).
//!
//! Everything real runs in this process — store, migrations, agent runtime, job engine, HTTP API on
//! loopback — and the model is a loopback OpenAI-compatible endpoint that answers instantly, so the
//! measured time is ours: `POST /agents/{id}/chat?wait=true` from request to the completed reply
//! (session and message written, job claimed, context assembled, budgets reserved and settled, model
//! streamed, answer stored, job completed, waiter woken). Each turn starts a new session.
//!
//! With an instant model, concurrent clients keep both cores busy and a turn's time is mostly its wait
//! behind the others' CPU (a throughput figure). `--model-latency-ms` makes the model answer after that
//! long, as real models do, and subtracts it from each sample: the overhead a turn sees while many
//! sessions are chatting at once without saturating the machine; the clients' starts are then spread
//! over one model latency, so their requests do not all arrive in the same instant.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use clap::Args;
use serde_json::{Value, json};

use super::in_process::InProcess;
use super::{Report, Scratch, ScratchArgs, millis, percentile};

/// Turns run before measuring, so connections and caches are warm.
const WARMUP: usize = 20;

/// Options of `cortex bench chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Measured chat turns, spread over `--concurrency` clients.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub turns: u32,
    /// Clients sending turns at the same time, each one turn after the other in new sessions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub concurrency: u32,
    /// The model answers each chat completion after this many milliseconds, subtracted from every
    /// sample (0: at once); the clients' starts are spread over it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub model_latency_ms: u64,
}

/// Measures chat turns on the scratch database.
pub(crate) async fn measure(scratch: &Scratch, args: &ChatArgs) -> anyhow::Result<Report> {
    let turns = args.turns as usize;
    let concurrency = (args.concurrency as usize).min(turns);
    let model_latency = Duration::from_millis(args.model_latency_ms);
    let model = InstantModel::start(model_latency).await?;
    let env = BTreeMap::from([
        ("OPENAI_BASE_URL".to_owned(), model.base_url.clone()),
        ("OPENAI_API_KEY".to_owned(), "bench".to_owned()),
    ]);
    // Enough slots that concurrent clients measure the overhead, not a queue behind the default five.
    let server = InProcess::start(scratch, env, Some(concurrency.max(5))).await?;
    let measured = turns_through_http(&server.base, &server.key, turns, concurrency, model_latency).await;
    let engine = server.store.engine_name();
    server.stop().await?;
    let mut samples: Vec<Duration> = measured?.into_iter().map(|turn| turn.saturating_sub(model_latency)).collect();
    samples.sort();
    let total: Duration = samples.iter().sum();
    let model = match args.model_latency_ms {
        0 => "instant model".to_owned(),
        ms => format!("model answering after {ms} ms (subtracted)"),
    };
    let mut report = Report::new(
        "chat",
        engine,
        format!("{turns} turns of POST /agents/{{id}}/chat?wait=true by {concurrency} clients, {model}"),
    );
    report.figure("turn_p50_ms", "overhead per turn, p50", millis(percentile(&samples, 0.50)), "ms");
    report.figure("turn_p99_ms", "overhead per turn, p99", millis(percentile(&samples, 0.99)), "ms");
    report.figure("turn_mean_ms", "overhead per turn, mean", millis(total / turns.max(1) as u32), "ms");
    report.figure("turn_max_ms", "overhead per turn, max", millis(samples.last().copied().unwrap_or_default()), "ms");
    Ok(report)
}

/// Runs `turns` turns by `concurrency` clients. Client `i` starts `i / concurrency` of `spread` after the
/// first, so with a model that takes `spread` to answer the clients' requests arrive spread over time, as
/// independent sessions' do, instead of in one burst per model answer.
async fn turns_through_http(
    base: &str,
    key: &str,
    turns: usize,
    concurrency: usize,
    spread: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::new();
    let agent = json!({"name": "bench", "model_config": {"provider": "openai", "model": "gpt-4o-mini"},
                       "resource_limits": {"max_concurrent_jobs": concurrency.clamp(4, 100)}});
    let created = http.post(format!("{base}/agents")).bearer_auth(key).json(&agent).send().await?;
    if !created.status().is_success() {
        bail!("creating the agent failed: {}", created.text().await.unwrap_or_default());
    }
    let url = format!("{base}/agents/bench/chat?wait=true");
    for _ in 0..WARMUP {
        one_turn(&http, &url, key).await?;
    }
    // `concurrency` clients, each running its share of the turns one after the other.
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let share = turns / concurrency + usize::from(client < turns % concurrency);
            let (http, url, key) = (http.clone(), url.clone(), key.to_owned());
            let start_after = spread * client as u32 / concurrency as u32;
            tokio::spawn(async move {
                tokio::time::sleep(start_after).await;
                let mut samples = Vec::with_capacity(share);
                for _ in 0..share {
                    samples.push(one_turn(&http, &url, &key).await?);
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(turns);
    for client in clients {
        samples.extend(client.await.context("a benchmark client failed")??);
    }
    Ok(samples)
}

/// One turn in a new session; returns how long it took.
async fn one_turn(http: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = http.post(url).bearer_auth(key).json(&json!({"text": "ping"})).send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let elapsed = started.elapsed();
    if status != 200 || body["status"] != "completed" {
        bail!("a turn did not complete: {status} {body}");
    }
    Ok(elapsed)
}

/// A loopback OpenAI-compatible endpoint that answers every chat completion with "pong" (streamed when
/// asked), after `delay` (zero: at once), and every embeddings request at once with a fixed vector (a
/// turn's memory recall embeds the user's message when embeddings are on; without this route that call
/// failed with 404 and the recall fell back to keywords with a warning per turn). Shared by the scenarios
/// that need a model (`chat`, `soak`, `queue --workers`).
pub(super) struct InstantModel {
    /// `http://127.0.0.1:<port>/v1`, for `OPENAI_BASE_URL`.
    pub(super) base_url: String,
}

impl InstantModel {
    pub(super) async fn start(delay: Duration) -> anyhow::Result<InstantModel> {
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .route("/v1/embeddings", axum::routing::post(embed))
            .with_state(delay);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(error = %err, "benchmark model stopped");
            }
        });
        Ok(InstantModel { base_url })
    }
}

/// Dimensions of the vectors [`embed`] answers with (those of `text-embedding-3-small`, the default model).
const EMBEDDING_DIMENSIONS: usize = 1536;

/// One vector per input, the same for every text: the benchmark measures the call, not recall quality.
/// Base64 when asked for (as OpenAI answers `"encoding_format": "base64"`), numbers otherwise.
async fn embed(axum::Json(request): axum::Json<Value>) -> Response {
    let inputs = match &request["input"] {
        Value::Array(texts) => texts.len(),
        _ => 1,
    };
    let vector: Vec<f32> = (0..EMBEDDING_DIMENSIONS).map(|i| if i % 2 == 0 { 0.03 } else { -0.02 }).collect();
    let embedding = if request["encoding_format"] == "base64" {
        json!(base64::engine::general_purpose::STANDARD.encode(cortex_memory::embed::to_bytes(&vector)))
    } else {
        json!(vector)
    };
    let data: Vec<Value> =
        (0..inputs).map(|index| json!({"object": "embedding", "index": index, "embedding": embedding})).collect();
    axum::Json(json!({"object": "list", "data": data, "model": request["model"],
        "usage": {"prompt_tokens": inputs, "total_tokens": inputs}}))
    .into_response()
}

async fn complete(State(delay): State<Duration>, axum::Json(request): axum::Json<Value>) -> Response {
    if !delay.is_zero() {
        // The model's own thinking time, which a job spends waiting.
        tokio::time::sleep(delay).await;
    }
    let model = request["model"].as_str().unwrap_or("bench").to_owned();
    let usage = json!({"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13});
    if request["stream"].as_bool().unwrap_or(false) {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "bench", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let usage_chunk = json!({"id": "bench", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage});
        let body = format!(
            "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            chunk(json!({"role": "assistant", "content": "pong"}), Value::Null),
            chunk(json!({}), json!("stop")),
            usage_chunk
        );
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from(body))
            .unwrap_or_default();
    }
    axum::Json(json!({"id": "bench", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}],
        "usage": usage}))
    .into_response()
}
