//! `cortex bench spike`: whether a `cortex serve` process gives memory back after a load spike (SPEC
//! Appendix B, Connections: "after a load spike, memory returns to within 2× of idle"; issue 12 point 13).
//!
//! Starts this very binary as `cortex serve` (SQLite in the scratch directory, or the scratch PostgreSQL
//! database) with a known admin key, creates `--agents` agents with large fields, and reads the idle RSS.
//! The spike: `--connections` idle keep-alive connections are opened and held, and `--rounds` rounds of
//! `--parallel` concurrent `GET /agents?limit=200` (each a full page, up to the 1 MiB byte budget) are
//! sent; the RSS is read at the end of the spike. Then every connection is closed, the process is left
//! alone for `--settle-ms` and its RSS is read again. The allocator the binary was built with is named
//! in the setup line.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::startup::{ServeProcess, mib, rss_kib};
use super::{Report, Scratch, ScratchArgs};

/// Options of `cortex bench spike`.
#[derive(Debug, Args)]
pub struct SpikeArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Agents created before the spike, each with a 4,000-character description and a 60,000-character
    /// system prompt.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub agents: u32,
    /// Concurrent `GET /agents?limit=200` requests per round.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub parallel: u32,
    /// Rounds of concurrent requests.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub rounds: u32,
    /// Idle connections held open during the spike.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(0..=20_000))]
    pub connections: u32,
    /// Milliseconds the process is left alone after the spike before its RSS is read.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub settle_ms: u64,
}

/// Runs the spike against a fresh `cortex serve` and reports idle, peak and settled RSS.
pub(crate) async fn measure(scratch: &Scratch, args: &SpikeArgs) -> anyhow::Result<Report> {
    let key = cortex_core::api_key::generate().plaintext;
    let server = ServeProcess::start(scratch, "spike", &[("CORTEX_API_KEY", key.as_str())]).await?;
    let result = spike(&server, &key, args).await;
    let log = server.stop()?;
    let (idle, peak, settled) = result.with_context(|| format!("the server's log:\n{log}"))?;
    let mut report = Report::new(
        "spike",
        scratch.engine_name(),
        format!(
            "`cortex serve` ({} allocator): {} agents of ~64 KB; spike = {} idle connections held + {} rounds of {} \
             parallel GET /agents?limit=200; RSS {} ms after the spike",
            crate::ALLOCATOR,
            args.agents,
            args.connections,
            args.rounds,
            args.parallel,
            args.settle_ms
        ),
    );
    report.figure("idle_rss_mib", "RSS before the spike", mib(idle), "MiB");
    report.figure("spike_rss_mib", "RSS at the end of the spike", mib(peak), "MiB");
    report.figure("settled_rss_mib", "RSS after the spike", mib(settled), "MiB");
    report.figure("settled_over_idle", "RSS after / before the spike (target ≤ 2)", ratio(settled, idle), "×");
    Ok(report)
}

fn ratio(after: u64, before: u64) -> f64 {
    ((after as f64 / before.max(1) as f64) * 100.0).round() / 100.0
}

async fn spike(server: &ServeProcess, key: &str, args: &SpikeArgs) -> anyhow::Result<(u64, u64, u64)> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let description = "d".repeat(4_000);
    let prompt = "p".repeat(60_000);
    for n in 0..args.agents {
        let body = json!({
            "name": format!("spike-{n}"),
            "description": description,
            "system_prompt": prompt,
            "model_config": {"provider": "openai", "model": "gpt-4o-mini"},
        });
        let response = http.post(format!("{}/agents", server.base)).bearer_auth(key).json(&body).send().await?;
        if !response.status().is_success() {
            bail!("creating agent {n}: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
    }
    // Let the set-up's own garbage settle the same way the spike's will.
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let idle = rss_kib(server.pid())?;

    let address = server.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        let mut stream = tokio::net::TcpStream::connect(&address).await.context("opening an idle connection")?;
        // A request head started and never finished keeps the server's read buffer allocated.
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n").await?;
        held.push(stream);
    }
    for _ in 0..args.rounds {
        let mut round = tokio::task::JoinSet::new();
        for _ in 0..args.parallel {
            let (http, url, key) = (http.clone(), format!("{}/agents?limit=200", server.base), key.to_owned());
            round.spawn(async move {
                let response = http.get(url).bearer_auth(key).send().await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                anyhow::ensure!(status.is_success(), "GET /agents answered {status}");
                Ok(bytes.len())
            });
        }
        while let Some(done) = round.join_next().await {
            done??;
        }
    }
    let peak = rss_kib(server.pid())?;
    drop(held);
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let settled = rss_kib(server.pid())?;
    Ok((idle, peak, settled))
}
