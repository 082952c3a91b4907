//! `cortex bench sse`: many SSE subscribers on one agent stream (issue 17 point 3; target: delivery
//! p99 < 50 ms with 1,000 subscribers).
//!
//! Starts the whole server in this process ([`InProcess`], no job engine), opens `--subscribers`
//! concurrent `GET /agents/{id}/stream` through the real HTTP server, and once every one has its 200,
//! commits `--events` events on that agent, one per transaction at `--rate` per second. A sample is one
//! event at one subscriber: from just before its transaction's commit to the subscriber reading its
//! `data:` line, so it includes the commit itself. Reported: delivery p50/p99/max over all samples, and
//! this process's RSS (server and clients together) before the subscribers connect, with all of them
//! connected, and its peak while the events are delivered (sampled every 5 ms).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use cortex_core::event::EventType;
use cortex_store::Store;
use cortex_store::events::NewEvent;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::fanout::peak_rss;
use super::in_process::InProcess;
use super::queue::bench_agent;
use super::startup::{mib, rss_kib};
use super::{Report, Scratch, ScratchArgs, millis, percentile};

/// How long the subscribers may take to receive every event before the benchmark gives up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);

/// Options of `cortex bench sse`.
#[derive(Debug, Args)]
pub struct SseArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Concurrent subscribers of the agent's stream.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub subscribers: u32,
    /// Events emitted while they listen.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub events: u32,
    /// Events emitted per second (one per transaction).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub rate: u64,
}

/// RSS readings of one run, in KiB.
struct Memory {
    before: u64,
    connected: u64,
    peak: u64,
}

/// Measures event delivery to many subscribers of one agent stream.
pub(crate) async fn measure(scratch: &Scratch, args: &SseArgs) -> anyhow::Result<Report> {
    let server = InProcess::start(scratch, BTreeMap::new(), None).await?;
    let measured = deliver(&server, args).await;
    let engine = server.store.engine_name();
    server.stop().await?;
    let (mut samples, memory) = measured?;
    samples.sort();
    let mut report = Report::new(
        "sse",
        engine,
        format!(
            "{} subscribers of GET /agents/{{id}}/stream, {} events at {}/s, whole server in this process",
            args.subscribers, args.events, args.rate
        ),
    );
    report.figure("delivery_p50_ms", "commit → subscriber, p50", millis(percentile(&samples, 0.50)), "ms");
    report.figure("delivery_p99_ms", "commit → subscriber, p99", millis(percentile(&samples, 0.99)), "ms");
    let max = samples.last().copied().unwrap_or_default();
    report.figure("delivery_max_ms", "commit → subscriber, max", millis(max), "ms");
    report.figure("rss_before_mib", "RSS before the subscribers (server + clients)", mib(memory.before), "MiB");
    report.figure("rss_connected_mib", "RSS with every subscriber connected", mib(memory.connected), "MiB");
    report.figure("peak_rss_mib", "peak RSS while delivering", mib(memory.peak), "MiB");
    Ok(report)
}

/// Connects the subscribers, emits the events and returns every delivery delay.
async fn deliver(server: &InProcess, args: &SseArgs) -> anyhow::Result<(Vec<Duration>, Memory)> {
    let events = args.events as usize;
    let agent_id = bench_agent(&server.store).await?;
    let before = rss_kib(std::process::id())?;
    let http = reqwest::Client::new();
    let url = format!("{}/agents/{agent_id}/stream", server.base);
    let mut connecting = JoinSet::new();
    for _ in 0..args.subscribers {
        let request = http.get(&url).bearer_auth(&server.key).send();
        connecting.spawn(async move {
            let response = request.await.context("subscribing")?;
            if response.status() != 200 {
                bail!("subscribing answered {}", response.status());
            }
            Ok(response)
        });
    }
    // Every stream's cursor is fixed once its 200 is back, so each sees every event emitted after this.
    let mut readers = JoinSet::new();
    while let Some(connected) = connecting.join_next().await {
        readers.spawn(read_events(connected.context("a subscriber task failed")??, events));
    }
    let connected = rss_kib(std::process::id())?;

    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(peak_rss(sampling.clone()));
    let emitted = emit(&server.store, agent_id, events, args.rate).await;
    let mut samples = Vec::with_capacity(events * args.subscribers as usize);
    let received = tokio::time::timeout(DELIVERY_TIMEOUT, async {
        while let Some(done) = readers.join_next().await {
            let arrivals = done.context("a subscriber task failed")??;
            samples.push(arrivals);
        }
        anyhow::Ok(())
    })
    .await;
    sampling.cancel();
    let peak = sampler.await.context("the RSS sampler failed")??.max(connected);
    let emitted = emitted?;
    if received.is_err() {
        bail!(
            "after {DELIVERY_TIMEOUT:?} only {} of {} subscribers had received all {events} events",
            samples.len(),
            args.subscribers
        );
    }
    received??;
    let delays = samples
        .iter()
        .flat_map(|arrivals| arrivals.iter().zip(&emitted).map(|(at, sent)| at.saturating_duration_since(*sent)))
        .collect();
    Ok((delays, Memory { before, connected, peak }))
}

/// Commits `events` events on the agent, one per transaction at `rate` per second; returns when each
/// commit started.
async fn emit(store: &Store, agent_id: Uuid, events: usize, rate: u64) -> anyhow::Result<Vec<Instant>> {
    let mut emitted = Vec::with_capacity(events);
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0..events {
        ticks.tick().await;
        let mut tx = store.begin().await?;
        tx.emit(NewEvent::new(agent_id, None, EventType::Checkpoint, json!({"bench": n})));
        emitted.push(Instant::now());
        tx.commit().await?;
    }
    Ok(emitted)
}

/// Reads one stream until it has seen `events` benchmark events; returns when each arrived, by index.
async fn read_events(mut response: reqwest::Response, events: usize) -> anyhow::Result<Vec<Instant>> {
    let mut arrivals = vec![None; events];
    let mut seen = 0;
    let mut pending = Vec::new();
    while seen < events {
        let Some(chunk) = response.chunk().await.context("reading the stream")? else {
            bail!("the stream ended after {seen} of {events} events");
        };
        let now = Instant::now();
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else { continue };
            let event: Value = serde_json::from_slice(data.trim_ascii()).context("an event's data")?;
            let index = event["data"]["bench"].as_u64().and_then(|n| usize::try_from(n).ok());
            if let Some(slot) = index.and_then(|n| arrivals.get_mut(n))
                && slot.is_none()
            {
                *slot = Some(now);
                seen += 1;
            }
        }
    }
    Ok(arrivals.into_iter().flatten().collect())
}
