//! `cortex bench soak`: a steady mixed load on one real `cortex serve` process for a long time, to see
//! whether its memory or its latency drifts (issue 17: after warm-up, RSS growth < 10 % and chat p99
//! drift < 20 % over 60 minutes).
//!
//! The server is this very binary started as `cortex serve` ([`ServeProcess`]) on the scratch store, so
//! the RSS read from `/proc/<pid>/status` is the server's alone; its model is a loopback
//! OpenAI-compatible endpoint in the bench process that streams "pong" at once ([`InstantModel`]).
//! Memory extraction and embeddings are off (they would add model calls of their own at times the load
//! does not choose). `--agents` agents are created through the API, then until the end, round-robin
//! over them:
//! - `--chats-per-second` chat turns `POST /agents/{id}/chat?wait=true`, each in a new session; a
//!   sample is request → completed reply;
//! - `--jobs-per-second` task jobs `POST /agents/{id}/jobs` (the server's engine runs them through the
//!   model too);
//! - `--readers` SSE readers following `GET /agents/{id}/stream`, counting `data:` lines (a stream that
//!   ends or fails is an error and is reopened).
//!
//! Requests are started on a fixed schedule whatever the answers (open loop), so a slow server shows as
//! latency rather than as less load. Every `--window-seconds` (a minute by default) one line: the
//! server's RSS, chat p50/p99 of the turns that ended in that window, jobs completed and failed, jobs
//! waiting (queued or running; all three from the server's `cortex_jobs_in_state` gauges), SSE events
//! received and errors. A backlog that grows window after window means the load is above the server's
//! capacity, and the verdict then measures the backlog rather than a leak: lower the rates. At the end,
//! [`summarise`] judges the run against the targets.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use cortex_api::server::ConnectionLimits;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::chat::InstantModel;
use super::startup::{ServeProcess, mib, rss_kib};
use super::{Report, Scratch, ScratchArgs, millis, percentile};

/// Warm-up at most this long (or the first tenth of a shorter run): caches, pools and the allocator
/// settle, and the database's first pages are written.
const WARMUP: Duration = Duration::from_secs(5 * 60);
/// Target: RSS at the end no more than this much above RSS at the end of warm-up, in %.
const RSS_GROWTH_TARGET_PERCENT: f64 = 10.0;
/// Target: chat p99 of the last tenth of the run no more than this much above the first tenth after
/// warm-up, in %.
const P99_DRIFT_TARGET_PERCENT: f64 = 20.0;
/// A chat turn or job request taking longer than this is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before reopening an SSE stream that ended or failed.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

/// Options of `cortex bench soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub scratch: ScratchArgs,
    /// Length of the run in minutes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=10_080))]
    pub minutes: u64,
    /// Length of the run in seconds instead of `--minutes` (short checks).
    #[arg(long, conflicts_with = "minutes", value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub seconds: Option<u64>,
    /// Seconds per reported window; the run lasts whole windows.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub window_seconds: u64,
    /// Chat turns started per second (`POST /agents/{id}/chat?wait=true`, new session each).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub chats_per_second: u32,
    /// Task jobs created per second (`POST /agents/{id}/jobs`).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub jobs_per_second: u32,
    /// SSE readers following agent streams.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub readers: u32,
    /// Agents the load is spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub agents: u32,
}

/// What happened in one window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WindowStats {
    /// 1-based.
    index: usize,
    /// The server's VmRSS at the window's end.
    rss_kib: u64,
    /// Chat turns completed in the window.
    chats: usize,
    chat_p50_ms: f64,
    chat_p99_ms: f64,
    /// Jobs (chats and tasks) that reached `completed` / an unsuccessful end in the window.
    jobs_completed: u64,
    jobs_failed: u64,
    /// Jobs queued or running at the window's end: growing window after window, the load is above what
    /// the server can do and latency and RSS grow with the backlog, not with a leak.
    jobs_waiting: u64,
    sse_events: u64,
    errors: u64,
    /// The window's chat latencies, sorted.
    #[serde(skip)]
    latencies: Vec<Duration>,
}

impl WindowStats {
    fn new(index: usize, rss_kib: u64, mut latencies: Vec<Duration>) -> WindowStats {
        latencies.sort();
        WindowStats {
            index,
            rss_kib,
            chats: latencies.len(),
            chat_p50_ms: millis(percentile(&latencies, 0.50)),
            chat_p99_ms: millis(percentile(&latencies, 0.99)),
            jobs_completed: 0,
            jobs_failed: 0,
            jobs_waiting: 0,
            sse_events: 0,
            errors: 0,
            latencies,
        }
    }
}

/// The verdict of a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    /// Windows counted as warm-up (not judged).
    warmup_windows: usize,
    /// Windows pooled at each end for the p99 comparison.
    compared_windows: usize,
    /// RSS at the end of warm-up and at the end of the run.
    rss_base_kib: u64,
    rss_end_kib: u64,
    rss_growth_percent: f64,
    /// Chat p99 of the first and of the last `compared_windows` after warm-up.
    p99_first: Duration,
    p99_last: Duration,
    /// `None` when either end has no completed turn.
    p99_drift_percent: Option<f64>,
}

impl Summary {
    fn rss_pass(&self) -> bool {
        self.rss_growth_percent < RSS_GROWTH_TARGET_PERCENT
    }

    fn p99_pass(&self) -> bool {
        self.p99_drift_percent.is_some_and(|drift| drift < P99_DRIFT_TARGET_PERCENT)
    }
}

/// Windows of warm-up: those covering the first [`WARMUP`], or the first tenth of the run if that is
/// fewer, at least one.
pub(crate) fn warmup_windows(windows: usize, window: Duration) -> usize {
    let warmup = usize::try_from(WARMUP.as_secs().div_ceil(window.as_secs().max(1))).unwrap_or(usize::MAX);
    warmup.min(windows.div_ceil(10)).max(1)
}

/// Judges a run: RSS growth from the end of warm-up to the end of the run, and chat p99 drift from the
/// first tenth of the windows after warm-up to the last tenth (each at least one window, latencies
/// pooled). `None` when fewer than two windows follow the warm-up.
pub(crate) fn summarise(windows: &[WindowStats], window: Duration) -> Option<Summary> {
    let warmup = warmup_windows(windows.len(), window);
    let judged = windows.get(warmup..).filter(|judged| judged.len() >= 2)?;
    let compared = judged.len().div_ceil(10);
    let pooled = |part: &[WindowStats]| {
        let mut all: Vec<Duration> = part.iter().flat_map(|w| w.latencies.iter().copied()).collect();
        all.sort();
        all
    };
    let first = pooled(&judged[..compared]);
    let last = pooled(&judged[judged.len() - compared..]);
    let (p99_first, p99_last) = (percentile(&first, 0.99), percentile(&last, 0.99));
    let p99_drift_percent = (!first.is_empty() && !last.is_empty() && !p99_first.is_zero())
        .then(|| percent_change(p99_first.as_secs_f64(), p99_last.as_secs_f64()));
    let rss_base_kib = windows[warmup - 1].rss_kib;
    let rss_end_kib = judged[judged.len() - 1].rss_kib;
    Some(Summary {
        warmup_windows: warmup,
        compared_windows: compared,
        rss_base_kib,
        rss_end_kib,
        rss_growth_percent: percent_change(rss_base_kib as f64, rss_end_kib as f64),
        p99_first,
        p99_last,
        p99_drift_percent,
    })
}

fn percent_change(from: f64, to: f64) -> f64 {
    ((to - from) / from.max(f64::EPSILON) * 1000.0).round() / 10.0
}

/// Runs the soak and reports the verdict; the per-window lines are printed as the run goes (to stdout,
/// or to stderr with `--json` so stdout stays one JSON document).
pub(crate) async fn measure(scratch: &Scratch, args: &SoakArgs) -> anyhow::Result<Report> {
    let window = Duration::from_secs(args.window_seconds);
    let total = args.seconds.unwrap_or(args.minutes * 60);
    let windows = usize::try_from((total / args.window_seconds).max(1))?;
    let model = InstantModel::start(Duration::ZERO).await?;
    let key = cortex_core::api_key::generate().plaintext;
    let env = [
        ("CORTEX_API_KEY", key.as_str()),
        ("OPENAI_BASE_URL", model.base_url.as_str()),
        ("OPENAI_API_KEY", "bench"),
        ("CORTEX_RATE_LIMIT_API_PER_MINUTE", "0"),
        ("CORTEX_RATE_LIMIT_CHAT_PER_MINUTE", "0"),
        ("CORTEX_EMBEDDINGS", "none"),
        ("CORTEX_MEMORY_EXTRACTION", "off"),
    ];
    let server = ServeProcess::start(scratch, "soak", &env).await?;
    let result = soak(&server, &key, args, windows, window).await;
    let log = server.stop()?;
    let series = result.with_context(|| format!("the server's log:\n{log}"))?;

    let setup = format!(
        "`cortex serve` child, {windows} windows of {}s, {} chats/s + {} task jobs/s over {} agents, {} SSE readers, \
         instant model",
        args.window_seconds, args.chats_per_second, args.jobs_per_second, args.agents, args.readers
    );
    let mut report = Report::new("soak", scratch.engine_name(), setup);
    let sum = |field: fn(&WindowStats) -> u64| series.iter().map(field).sum::<u64>() as f64;
    report.figure("windows", "windows", series.len() as f64, "");
    report.figure("chat_turns", "chat turns completed", sum(|w| w.chats as u64), "");
    report.figure("jobs_completed", "jobs completed (chats and tasks)", sum(|w| w.jobs_completed), "");
    report.figure("jobs_failed", "jobs failed", sum(|w| w.jobs_failed), "");
    let waiting = series.last().map_or(0, |w| w.jobs_waiting) as f64;
    report.figure("jobs_waiting_end", "jobs queued or running at the end", waiting, "");
    report.figure("sse_events", "SSE events received", sum(|w| w.sse_events), "");
    report.figure("errors", "errors (requests, streams, scrapes)", sum(|w| w.errors), "");
    match summarise(&series, window) {
        Some(summary) => add_verdict(&mut report, &summary),
        None => report.figure("verdict", "too short for a verdict (needs 2 windows after warm-up)", 0.0, ""),
    }
    report.series(serde_json::to_value(&series)?);
    Ok(report)
}

fn add_verdict(report: &mut Report, summary: &Summary) {
    let verdict = |pass: bool| if pass { "PASS" } else { "FAIL" };
    report.figure("warmup_windows", "warm-up windows (not judged)", summary.warmup_windows as f64, "");
    report.figure("rss_after_warmup_mib", "RSS at the end of warm-up", mib(summary.rss_base_kib), "MiB");
    report.figure("rss_end_mib", "RSS at the end", mib(summary.rss_end_kib), "MiB");
    report.figure(
        "rss_growth_percent",
        format!("RSS growth after warm-up (< {RSS_GROWTH_TARGET_PERCENT} %): {}", verdict(summary.rss_pass())),
        summary.rss_growth_percent,
        "%",
    );
    let compared = summary.compared_windows;
    report.figure(
        "chat_p99_first_ms",
        format!("chat p99, first {compared} window(s) after warm-up"),
        millis(summary.p99_first),
        "ms",
    );
    report.figure("chat_p99_last_ms", format!("chat p99, last {compared} window(s)"), millis(summary.p99_last), "ms");
    match summary.p99_drift_percent {
        Some(drift) => report.figure(
            "chat_p99_drift_percent",
            format!("chat p99 drift (< {P99_DRIFT_TARGET_PERCENT} %): {}", verdict(summary.p99_pass())),
            drift,
            "%",
        ),
        None => report.figure("chat_p99_drift_percent", "chat p99 drift: no turns to compare, FAIL", f64::NAN, "%"),
    }
    report.figure("rss_pass", "RSS target met (1 = yes)", f64::from(u8::from(summary.rss_pass())), "");
    report.figure("p99_pass", "p99 target met (1 = yes)", f64::from(u8::from(summary.p99_pass())), "");
}

/// Counts shared by the load tasks, taken at each window's end.
#[derive(Default)]
struct Tally {
    latencies: Mutex<Vec<Duration>>,
    sse_events: AtomicU64,
    errors: AtomicU64,
    /// The latest error, printed with its window.
    last_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    fn latency(&self, latency: Duration) {
        if let Ok(mut latencies) = self.latencies.lock() {
            latencies.push(latency);
        }
    }

    fn take(&self) -> (Vec<Duration>, u64, u64, Option<String>) {
        let latencies = self.latencies.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        let last_error = self.last_error.lock().map(|mut e| e.take()).unwrap_or_default();
        (latencies, self.sse_events.swap(0, Ordering::Relaxed), self.errors.swap(0, Ordering::Relaxed), last_error)
    }
}

/// What the load needs to reach the server.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    base: String,
    key: String,
    agents: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    tally: Arc<Tally>,
}

impl Target {
    /// The next agent, round-robin.
    fn agent(&self) -> &str {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.agents[n % self.agents.len()]
    }
}

/// Starts the load, reports every window and returns them all.
async fn soak(
    server: &ServeProcess,
    key: &str,
    args: &SoakArgs,
    windows: usize,
    window: Duration,
) -> anyhow::Result<Vec<WindowStats>> {
    // The server closes a connection idle for its idle timeout; a pooled connection reused at that very
    // moment fails its request ("connection closed before message completed"). Dropping idle connections
    // well before the server does keeps that race out of the figures.
    let idle = ConnectionLimits::default().idle_timeout / 2;
    let http = reqwest::Client::builder().pool_idle_timeout(idle).build()?;
    let agents = create_agents(&http, &server.base, key, args.agents).await?;
    let target = Target {
        http,
        base: server.base.clone(),
        key: key.to_owned(),
        agents: Arc::new(agents),
        next: Arc::new(AtomicUsize::new(0)),
        tally: Arc::new(Tally::default()),
    };
    let json = args.scratch.json;
    let say = |line: String| if json { eprintln!("{line}") } else { println!("{line}") };
    say(format!(
        "soak: cortex serve pid {} ready, RSS {} MiB; {windows} windows of {}s",
        server.pid(),
        mib(rss_kib(server.pid())?),
        window.as_secs()
    ));

    let stop = CancellationToken::new();
    let mut load = tokio::task::JoinSet::new();
    for reader in 0..args.readers as usize {
        let agent = target.agents[reader % target.agents.len()].clone();
        load.spawn(follow(target.clone(), agent, stop.clone()));
    }
    load.spawn(paced(args.chats_per_second, stop.clone(), target.clone(), chat));
    load.spawn(paced(args.jobs_per_second, stop.clone(), target.clone(), task));

    let result = report_windows(server, &target, windows, window, say).await;
    stop.cancel();
    while load.join_next().await.is_some() {}
    result
}

/// Reads the counters at the end of every window and prints its line.
async fn report_windows(
    server: &ServeProcess,
    target: &Target,
    windows: usize,
    window: Duration,
    say: impl Fn(String),
) -> anyhow::Result<Vec<WindowStats>> {
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(started + window, window);
    let mut before = job_counts(target).await?;
    let mut series = Vec::with_capacity(windows);
    for index in 1..=windows {
        ticks.tick().await;
        let rss = rss_kib(server.pid()).context("reading the server's RSS (has it exited?)")?;
        let counts = match job_counts(target).await {
            Ok(counts) => counts,
            Err(err) => {
                target.tally.error(format!("scraping /metrics: {err:#}"));
                before
            }
        };
        let (latencies, sse_events, errors, last_error) = target.tally.take();
        let mut stats = WindowStats::new(index, rss, latencies);
        stats.jobs_completed = counts.0.saturating_sub(before.0);
        stats.jobs_failed = counts.1.saturating_sub(before.1);
        stats.jobs_waiting = counts.2;
        stats.sse_events = sse_events;
        stats.errors = errors;
        before = counts;
        let elapsed = started.elapsed().as_secs();
        let mut line = format!(
            "[{:02}:{:02}] window {index}/{windows}: RSS {:.1} MiB, chat p50 {:.1} ms p99 {:.1} ms ({} turns), \
             jobs completed {} failed {} waiting {}, SSE events {}, errors {}",
            elapsed / 60,
            elapsed % 60,
            mib(stats.rss_kib),
            stats.chat_p50_ms,
            stats.chat_p99_ms,
            stats.chats,
            stats.jobs_completed,
            stats.jobs_failed,
            stats.jobs_waiting,
            stats.sse_events,
            stats.errors
        );
        if let Some(error) = last_error {
            line.push_str(&format!(" (last: {error})"));
        }
        say(line);
        series.push(stats);
    }
    Ok(series)
}

/// Jobs completed, jobs ended unsuccessfully, and jobs queued or running, from the server's `/metrics`
/// gauges.
async fn job_counts(target: &Target) -> anyhow::Result<(u64, u64, u64)> {
    let response = target.http.get(format!("{}/metrics", target.base)).timeout(REQUEST_TIMEOUT).send().await?;
    if !response.status().is_success() {
        bail!("/metrics answered {}", response.status());
    }
    let text = response.text().await?;
    let gauge = |status: &str| {
        let prefix = format!("cortex_jobs_in_state{{status=\"{status}\"}}");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    };
    let waiting = gauge("pending") + gauge("scheduled") + gauge("running") + gauge("retrying");
    Ok((gauge("completed"), gauge("failed") + gauge("timed_out") + gauge("dead_letter"), waiting))
}

async fn create_agents(http: &reqwest::Client, base: &str, key: &str, count: u32) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for n in 0..count {
        let agent = json!({"name": format!("soak-{n}"), "model_config": {"provider": "openai", "model": "gpt-4o-mini"},
                           "resource_limits": {"max_concurrent_jobs": 20}});
        let response = http.post(format!("{base}/agents")).bearer_auth(key).json(&agent).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let Some(id) = body["id"].as_str().filter(|_| status.is_success()) else {
            bail!("creating an agent failed: {status} {body}");
        };
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// Starts `each` `per_second` times a second until `stop`, each in its own task, without waiting for
/// the previous ones (open loop); a request still running at the stop is abandoned.
async fn paced<F, Fut>(per_second: u32, stop: CancellationToken, target: Target, each: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (request, stop) = (each(target.clone()), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = request => {}
            }
        });
    }
}

/// One chat turn in a new session; its latency, or an error.
async fn chat(target: Target) {
    let url = format!("{}/agents/{}/chat?wait=true", target.base, target.agent());
    let started = Instant::now();
    let sent =
        target.http.post(url).bearer_auth(&target.key).json(&json!({"text": "ping"})).timeout(REQUEST_TIMEOUT).send();
    match sent.await {
        Ok(response) => {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == 200 && body["status"] == "completed" {
                target.tally.latency(started.elapsed());
            } else {
                target.tally.error(format!("chat: {status} {}", truncate(&body.to_string())));
            }
        }
        Err(err) => target.tally.error(format!("chat: {:#}", anyhow::Error::from(err))),
    }
}

/// One task job created.
async fn task(target: Target) {
    let url = format!("{}/agents/{}/jobs", target.base, target.agent());
    let sent =
        target.http.post(url).bearer_auth(&target.key).json(&json!({"prompt": "ping"})).timeout(REQUEST_TIMEOUT).send();
    match sent.await {
        Ok(response) if response.status() == 201 => {}
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            target.tally.error(format!("task: {status} {}", truncate(&body)));
        }
        Err(err) => target.tally.error(format!("task: {:#}", anyhow::Error::from(err))),
    }
}

/// Follows one agent stream until `stop`, counting the events it delivers and reopening it when it ends.
async fn follow(target: Target, agent: String, stop: CancellationToken) {
    let url = format!("{}/agents/{agent}/stream", target.base);
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = read_stream(&target, &url) => outcome,
        };
        let message = match outcome {
            Ok(()) => "the stream ended".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        target.tally.error(format!("SSE: {message}"));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REOPEN_PAUSE) => {}
        }
    }
}

async fn read_stream(target: &Target, url: &str) -> anyhow::Result<()> {
    let mut response = target.http.get(url).bearer_auth(&target.key).send().await?;
    if response.status() != 200 {
        bail!("subscribing answered {}", response.status());
    }
    let mut pending = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        let mut events = 0;
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            if pending.starts_with(b"data:") {
                events += 1;
            }
            pending.drain(..=end);
        }
        target.tally.sse_events.fetch_add(events, Ordering::Relaxed);
    }
    Ok(())
}

fn truncate(text: &str) -> &str {
    text.char_indices().nth(200).map_or(text, |(end, _)| &text[..end])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{WindowStats, summarise, warmup_windows};

    const MINUTE: Duration = Duration::from_secs(60);

    /// A window with this RSS whose turns took these milliseconds.
    fn window(index: usize, rss_kib: u64, latencies_ms: &[u64]) -> WindowStats {
        WindowStats::new(index, rss_kib, latencies_ms.iter().copied().map(Duration::from_millis).collect())
    }

    #[test]
    fn warm_up_is_five_minutes_or_a_tenth_of_a_short_run() {
        assert_eq!(warmup_windows(60, MINUTE), 5);
        assert_eq!(warmup_windows(600, MINUTE), 5);
        assert_eq!(warmup_windows(20, MINUTE), 2);
        assert_eq!(warmup_windows(3, MINUTE), 1);
        assert_eq!(warmup_windows(1, MINUTE), 1);
        // Ten-second windows: five minutes are 30 of them, unless the run is shorter than 300.
        assert_eq!(warmup_windows(360, Duration::from_secs(10)), 30);
        assert_eq!(warmup_windows(100, Duration::from_secs(10)), 10);
    }

    #[test]
    fn growth_and_drift_compare_the_end_with_the_end_of_warm_up() {
        // 60 one-minute windows: 5 of warm-up (RSS climbing, slow turns), then 55 judged; the first 6 and
        // the last 6 judged windows are compared.
        let mut windows = Vec::new();
        for index in 1..=60 {
            let (rss, p99) = match index {
                1..=4 => (50_000 + index as u64 * 5_000, 500),
                5 => (100_000, 400),
                6..=11 => (100_000, 20),
                55..=60 => (108_000, 23),
                _ => (104_000, 90),
            };
            // 100 turns: 98 fast ones and two at the window's p99.
            let mut latencies = vec![5; 98];
            latencies.extend([p99, p99]);
            windows.push(window(index, rss, &latencies));
        }
        let summary = summarise(&windows, MINUTE).unwrap();
        assert_eq!(summary.warmup_windows, 5);
        assert_eq!(summary.compared_windows, 6);
        assert_eq!((summary.rss_base_kib, summary.rss_end_kib), (100_000, 108_000));
        assert_eq!(summary.rss_growth_percent, 8.0);
        assert!(summary.rss_pass());
        assert_eq!((summary.p99_first, summary.p99_last), (Duration::from_millis(20), Duration::from_millis(23)));
        assert_eq!(summary.p99_drift_percent, Some(15.0));
        assert!(summary.p99_pass());

        // The last window alone climbing past both targets fails both.
        windows[59] = window(60, 111_000, &[40; 100]);
        let summary = summarise(&windows, MINUTE).unwrap();
        assert_eq!(summary.rss_growth_percent, 11.0);
        assert!(!summary.rss_pass());
        assert_eq!(summary.p99_last, Duration::from_millis(40));
        assert_eq!(summary.p99_drift_percent, Some(100.0));
        assert!(!summary.p99_pass());
    }

    #[test]
    fn short_or_idle_runs_get_no_passing_verdict() {
        // Two windows leave one after warm-up: nothing to compare.
        assert!(summarise(&[window(1, 10, &[1]), window(2, 10, &[1])], MINUTE).is_none());
        // Three windows: warm-up 1, judged 2, compared 1 at each end.
        let windows = [window(1, 100, &[9]), window(2, 90, &[10]), window(3, 95, &[12])];
        let summary = summarise(&windows, MINUTE).unwrap();
        assert_eq!((summary.warmup_windows, summary.compared_windows), (1, 1));
        assert_eq!(summary.rss_growth_percent, -5.0);
        assert_eq!(summary.p99_drift_percent, Some(20.0));
        assert!(!summary.p99_pass(), "the target is strictly below 20 %");
        // No turn completed at one end: no drift, and that is not a pass.
        let windows = [window(1, 100, &[9]), window(2, 100, &[]), window(3, 100, &[12])];
        let summary = summarise(&windows, MINUTE).unwrap();
        assert_eq!(summary.p99_drift_percent, None);
        assert!(!summary.p99_pass());
    }
}
