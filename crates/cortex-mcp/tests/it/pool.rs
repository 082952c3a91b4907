//! The pool: lazy start, restart after a crash, the breaker, idle close and eviction. Time is a
//! `ManualClock`, so breaker periods and idle timeouts pass without sleeping.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cortex_core::clock::ManualClock;
use cortex_mcp::pool::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use cortex_mcp::{McpError, Pool, ProbeOutcome, ServerConfig, ServerStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::fake::FakeMcp;
use crate::peers;

fn pool_with(max_connections: usize) -> (Pool, ManualClock) {
    let clock = ManualClock::new(chrono::Utc::now());
    (Pool::new(Arc::new(clock.clone()), max_connections, DEFAULT_IDLE_TIMEOUT), clock)
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn echo(pool: &Pool, config: &ServerConfig, message: &str) -> String {
    pool.call(config, "echo", json!({"message": message})).await.unwrap().text()
}

#[tokio::test]
async fn starts_lazily_and_restarts_a_killed_server() {
    let (pool, _clock) = pool_with(DEFAULT_MAX_CONNECTIONS);
    let config = peers::everything("everything");

    let idle_probe = pool.probe(&config).await;
    assert!(matches!(idle_probe.outcome, ProbeOutcome::NotRunning), "{idle_probe:?}");
    assert_eq!((pool.live_connections(), pool.pid(config.id)), (0, None), "nothing starts before first use");

    assert_eq!(echo(&pool, &config, "one").await, "Echo: one");
    let first_pid = pool.pid(config.id).expect("started on first call");
    assert!(pool.take_tools_changed(config.id), "a fresh start asks for re-listing");
    assert!(!pool.take_tools_changed(config.id));
    let healthy = pool.probe(&config).await;
    assert!(matches!(healthy.outcome, ProbeOutcome::Healthy { .. }) && !healthy.changed(), "{healthy:?}");

    kill(Pid::from_raw(first_pid as i32), Signal::SIGKILL).unwrap();
    tokio::time::timeout(Duration::from_secs(10), pool.wait_disconnected(config.id)).await.unwrap();

    assert_eq!(echo(&pool, &config, "two").await, "Echo: two", "restarted on next use");
    let second_pid = pool.pid(config.id).unwrap();
    assert_ne!(first_pid, second_pid);
    assert!(pool.take_tools_changed(config.id), "a restart asks for re-listing");
    assert_eq!(pool.status(config.id), ServerStatus::Active);

    let discovery = pool.refresh(&config).await.unwrap();
    assert!(discovery.tools.iter().any(|tool| tool.name == "echo"));
    assert_eq!(pool.pid(config.id), Some(second_pid), "refresh reuses the live connection");

    pool.remove(config.id).await;
    assert!(!process_exists(second_pid));
    assert_eq!(pool.live_connections(), 0);
}

#[tokio::test]
async fn a_probe_notices_a_dead_process() {
    let (pool, _clock) = pool_with(DEFAULT_MAX_CONNECTIONS);
    let config = peers::everything("everything");
    echo(&pool, &config, "up").await;
    let pid = pool.pid(config.id).unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    tokio::time::timeout(Duration::from_secs(10), pool.wait_disconnected(config.id)).await.unwrap();

    let probe = pool.probe(&config).await;
    assert!(matches!(probe.outcome, ProbeOutcome::Failed(McpError::Closed { .. })), "{probe:?}");
    assert_eq!(probe.status, ServerStatus::Active, "one failure does not open the breaker");
    assert_eq!(pool.live_connections(), 0);
    assert_eq!(echo(&pool, &config, "back").await, "Echo: back");
    pool.shutdown().await;
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_closes_after_recovery() {
    let (pool, clock) = pool_with(DEFAULT_MAX_CONNECTIONS);
    let broken = peers::exits_immediately("flaky");

    for _ in 0..3 {
        let error = pool.call(&broken, "echo", json!({})).await.unwrap_err();
        assert!(matches!(error, McpError::Exited { .. }), "{error:?}");
        assert!(!error.request_was_sent());
    }
    assert_eq!(pool.status(broken.id), ServerStatus::Error);
    let fast_fail = pool.call(&broken, "echo", json!({})).await.unwrap_err();
    assert!(matches!(fast_fail, McpError::BreakerOpen { .. }), "{fast_fail:?}");
    assert_eq!(fast_fail.to_string(), "mcp server `flaky`: unavailable after repeated failures (circuit breaker open)");
    assert!(matches!(pool.probe(&broken).await.outcome, ProbeOutcome::Skipped));

    clock.advance(chrono::Duration::seconds(31));
    assert_eq!(pool.status(broken.id), ServerStatus::Degraded, "half-open after the open period");

    // The operator fixes the server: same id, working command.
    let fixed = ServerConfig { transport: peers::everything("flaky").transport, ..broken.clone() };
    assert_eq!(echo(&pool, &fixed, "trial").await, "Echo: trial");
    assert_eq!(pool.status(fixed.id), ServerStatus::Degraded, "one success is not enough");
    let probe = pool.probe(&fixed).await;
    assert!(matches!(probe.outcome, ProbeOutcome::Healthy { .. }), "{probe:?}");
    assert_eq!((probe.previous, probe.status), (ServerStatus::Degraded, ServerStatus::Active));
    assert!(probe.changed());
    pool.shutdown().await;
}

#[tokio::test]
async fn tool_level_errors_do_not_count_against_the_server() {
    let (pool, _clock) = pool_with(DEFAULT_MAX_CONNECTIONS);
    let config = peers::everything("everything");
    for _ in 0..4 {
        match pool.call(&config, "no-such-tool", json!({})).await {
            Ok(outcome) => assert!(outcome.is_error, "{outcome:?}"),
            Err(error) => assert!(matches!(error, McpError::Protocol { .. }), "{error:?}"),
        }
    }
    assert_eq!(pool.status(config.id), ServerStatus::Active);
    pool.shutdown().await;
}

#[tokio::test]
async fn idle_connections_close_and_a_full_pool_evicts_the_least_recently_used() {
    let (pool, clock) = pool_with(1);
    let first = peers::everything("first");
    let second = peers::everything("second");

    echo(&pool, &first, "a").await;
    let first_pid = pool.pid(first.id).unwrap();
    clock.advance(chrono::Duration::seconds(1));
    echo(&pool, &second, "b").await;
    assert_eq!(pool.live_connections(), 1);
    assert_eq!(pool.pid(first.id), None, "evicted to stay within one connection");
    assert!(!process_exists(first_pid));

    let second_pid = pool.pid(second.id).unwrap();
    clock.advance(chrono::Duration::minutes(9));
    pool.close_idle().await;
    assert_eq!(pool.pid(second.id), Some(second_pid), "not idle for 10 minutes yet");
    clock.advance(chrono::Duration::minutes(1));
    pool.close_idle().await;
    assert_eq!(pool.live_connections(), 0);
    assert!(!process_exists(second_pid));
}

#[tokio::test]
async fn http_servers_are_probed_and_called_through_the_pool() {
    let (_fake, url) = FakeMcp::start().await;
    let (pool, _clock) = pool_with(DEFAULT_MAX_CONNECTIONS);
    let config = ServerConfig::new(
        uuid::Uuid::now_v7(),
        "remote",
        cortex_mcp::Transport::Http { url, headers: Default::default() },
    );
    let probe = pool.probe(&config).await;
    assert!(matches!(probe.outcome, ProbeOutcome::Healthy { .. }), "{probe:?}");
    let outcome = pool.call(&config, "beta", json!({"q": "x"})).await.unwrap();
    assert_eq!(outcome.text(), r#"called "beta" with {"q":"x"}"#);
    assert_eq!(pool.live_connections(), 1);
    pool.shutdown().await;
    assert_eq!(pool.live_connections(), 0);
}

#[tokio::test]
async fn a_dead_http_connection_is_replaced_and_the_call_retried_once() {
    let (pool, _clock) = pool_with(DEFAULT_MAX_CONNECTIONS);
    let running = crate::fake::FakeMcp::serve_at("127.0.0.1:0".parse().unwrap()).await;
    let address = running.address;
    let config = ServerConfig::new(
        uuid::Uuid::now_v7(),
        "remote",
        cortex_mcp::Transport::Http { url: running.url(), headers: Default::default() },
    );
    pool.call(&config, "alpha", json!({})).await.unwrap();
    running.stop().await;

    // The reused session fails before the request is written (connection refused), so the pool drops it
    // and retries once on a new connection, whose initialize is refused too.
    let error = pool.call(&config, "alpha", json!({})).await.unwrap_err();
    assert!(matches!(error, McpError::Connect { .. }), "retry reconnects: {error:?}");
    assert!(!error.request_was_sent());
    assert_eq!(pool.live_connections(), 0);

    let restarted = crate::fake::FakeMcp::serve_at(address).await;
    let outcome = pool.call(&config, "alpha", json!({"again": true})).await.unwrap();
    assert_eq!(outcome.text(), r#"called "alpha" with {"again":true}"#);
    assert_eq!(restarted.fake.requests()[0].method, "initialize", "a fresh session on the restarted server");
    pool.shutdown().await;
}
