//! `cortex bench ui`: server render time of the dashboard's list pages (issue 14: p95 < 20 ms for a list
//! page of 50 rows).
//!
//! The in-process server holds 60 agents, 60 jobs, and 60 memories and 60 sessions of one agent, so every
//! list page shows a full page of 50 rows (and a next-page link). Each page is requested `--rounds` times with an admin key
//! after a warm-up; a sample is the time from sending the request to reading the last byte over loopback,
//! so it includes the store queries, the template and the security headers — everything the server does.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::in_process::InProcess;
use super::{Report, Scratch, ScratchArgs, millis, percentile};

/// Requests per page before measuring.
const WARMUP: usize = 10;
/// Records of each kind: more than a page, so the pages are full.
const RECORDS: usize = 60;
/// Rows a full list page shows.
const PAGE_ROWS: usize = 50;

/// Options of `cortex bench ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Measured requests per page.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rounds: u32,
}

/// Measures the list pages on the scratch database.
pub(crate) async fn measure(scratch: &Scratch, args: &UiArgs) -> anyhow::Result<Report> {
    let server = InProcess::start(scratch, Default::default(), None).await?;
    let measured = pages(&server.base, &server.key, args.rounds as usize).await;
    let engine = server.store.engine_name();
    server.stop().await?;
    let mut report = Report::new(
        "ui",
        engine,
        format!("{} requests per list page of {PAGE_ROWS} rows, request to last byte over loopback", args.rounds),
    );
    for (name, path, mut samples) in measured? {
        samples.sort();
        report.figure(
            format!("{name}_p50_ms"),
            format!("{path} render, p50"),
            millis(percentile(&samples, 0.50)),
            "ms",
        );
        report.figure(
            format!("{name}_p95_ms"),
            format!("{path} render, p95"),
            millis(percentile(&samples, 0.95)),
            "ms",
        );
    }
    Ok(report)
}

/// (figure name, path, samples) of every list page.
type Measured = Vec<(&'static str, String, Vec<Duration>)>;

async fn pages(base: &str, key: &str, rounds: usize) -> anyhow::Result<Measured> {
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = http.post(format!("{base}{path}")).bearer_auth(key).json(&body);
        async move {
            let response = request.send().await?;
            if !response.status().is_success() {
                bail!("seeding {path} failed: {}", response.text().await.unwrap_or_default());
            }
            anyhow::Ok(response.json::<Value>().await?)
        }
    };
    let mut first_agent = String::new();
    for n in 0..RECORDS {
        let agent = post(
            "/agents".into(),
            json!({"name": format!("Agent {n:02}"), "description": "A benchmark agent with a short description",
                   "model_config": {"provider": "openai", "model": "gpt-4o-mini"}}),
        )
        .await?;
        let id = agent["id"].as_str().context("agent id")?.to_owned();
        post(format!("/agents/{id}/jobs"), json!({"prompt": format!("Task number {n}")})).await?;
        if n == 0 {
            first_agent = id;
        }
    }
    for n in 0..RECORDS {
        post(
            format!("/agents/{first_agent}/memory"),
            json!({"content": format!("Benchmark fact number {n}: the deploy window is on day {n}."),
                   "tags": ["bench", "ops"]}),
        )
        .await?;
        // A chat without a session id starts a new session.
        post(format!("/agents/{first_agent}/chat"), json!({"text": format!("Conversation number {n}")})).await?;
    }
    let targets = [
        ("agents", "/ui/agents".to_owned()),
        ("jobs", "/ui/jobs".to_owned()),
        ("memory", format!("/ui/memory?agent={first_agent}")),
        ("sessions", format!("/ui/agents/{first_agent}/sessions")),
    ];
    let mut results = Vec::new();
    for (name, path) in targets {
        let url = format!("{base}{path}");
        let rows = fetch(&http, &url, key).await?.1.matches("<tr>").count().saturating_sub(1);
        if rows != PAGE_ROWS {
            bail!("{path} shows {rows} rows, not {PAGE_ROWS}");
        }
        for _ in 0..WARMUP {
            fetch(&http, &url, key).await?;
        }
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            samples.push(fetch(&http, &url, key).await?.0);
        }
        results.push((name, path, samples));
    }
    Ok(results)
}

/// One page: how long it took to the last byte, and its HTML.
async fn fetch(http: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let response = http.get(url).bearer_auth(key).send().await?;
    let status = response.status();
    let body = response.text().await?;
    let elapsed = started.elapsed();
    if status != 200 {
        bail!("{url}: {status}");
    }
    Ok((elapsed, body))
}
