//! A crash inside a tool, through the real binary (SPEC §4.9, issue 12): the server is killed with
//! SIGKILL while a webhook call is in flight — the endpoint holds the first request until the process
//! is gone — and restarted on the same data. A non-idempotent call is then `interrupted` and never sent
//! again, and the model is told; an idempotent one is sent once more with the same `Idempotency-Key`; an
//! approved call whose single execution was claimed is never executed twice, idempotent or not.

use std::sync::{Arc, Mutex};

use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::e2e::{agent_with_counter, api, env, start, wait_job};

/// What the held endpoint's handler shares: the keys seen and the arrival counter.
type Held = (Arc<Mutex<Vec<String>>>, Arc<watch::Sender<usize>>);

/// A webhook endpoint whose first request never gets an answer (it is held until the caller dies);
/// later requests are answered at once. It records each request's `Idempotency-Key`.
struct HeldEndpoint {
    url: String,
    keys: Arc<Mutex<Vec<String>>>,
    arrivals: watch::Receiver<usize>,
}

impl HeldEndpoint {
    async fn start() -> HeldEndpoint {
        let keys = Arc::new(Mutex::new(Vec::new()));
        let (arrived, arrivals) = watch::channel(0);
        let state: Held = (keys.clone(), Arc::new(arrived));
        let app = axum::Router::new()
            .route(
                "/hit",
                axum::routing::post(
                    |axum::extract::State((keys, arrived)): axum::extract::State<Held>,
                     headers: axum::http::HeaderMap| async move {
                        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
                        let first = {
                            let mut keys = keys.lock().unwrap();
                            keys.push(key.to_owned());
                            keys.len() == 1
                        };
                        arrived.send_modify(|count| *count += 1);
                        if first {
                            std::future::pending::<()>().await;
                        }
                        axum::Json(json!({"ok": true}))
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hit", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        HeldEndpoint { url, keys, arrivals }
    }

    /// Resolves once `count` requests have arrived (the first one is still being held).
    async fn wait_for(&mut self, count: usize) {
        self.arrivals.wait_for(|seen| *seen >= count).await.unwrap();
    }

    fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().clone()
    }
}

/// The `tool.result` events of a job, from the event log.
async fn tool_results(base: &str, job_id: &str) -> Vec<Value> {
    let events = api(reqwest::Method::GET, format!("{base}/jobs/{job_id}/transcript"), None).await;
    events["items"].as_array().unwrap().iter().filter(|e| e["event_type"] == "tool.result").cloned().collect()
}

/// Kills the server while the webhook call is held, restarts it, and returns the finished job and the
/// restarted server.
async fn crash_mid_call(idempotent: bool) -> (FakeLlm, HeldEndpoint, Value) {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("webhook__counter", json!({"n": 1})));
    llm.rule(When::LastIsToolResult, Reply::text("finished after the crash"));
    let mut endpoint = HeldEndpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env(&llm);
    let server = start(dir.path(), &env);
    let agent = agent_with_counter(&server.url, &endpoint.url, "never", idempotent).await;
    let reply =
        api(reqwest::Method::POST, format!("{}/agents/{agent}/chat", server.url), Some(json!({"text": "count once"})))
            .await;
    let job_id = reply["job_id"].as_str().unwrap().to_owned();
    endpoint.wait_for(1).await;
    server.kill();

    let restarted = start(dir.path(), &env);
    let job = wait_job(&restarted.url, &job_id, |job| job["status"] == "completed").await;
    assert_eq!(job["result"]["response"], "finished after the crash");
    let results = tool_results(&restarted.url, &job_id).await;
    restarted.kill();
    let summary = json!({"job": job, "tool_results": results});
    (llm, endpoint, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_idempotent_call_killed_mid_flight_is_interrupted_and_never_sent_again() {
    let (llm, endpoint, summary) = crash_mid_call(false).await;
    assert_eq!(endpoint.keys().len(), 1, "the webhook was not called again");
    let results = summary["tool_results"].as_array().unwrap();
    assert_eq!(results.last().unwrap()["payload"]["state"], "interrupted", "{results:?}");
    let told = llm.requests().last().unwrap().tool_results().join(" ");
    assert!(told.contains("outcome unknown"), "the model was told: {told}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_killed_mid_flight_is_sent_once_more_with_the_same_key() {
    let (llm, endpoint, summary) = crash_mid_call(true).await;
    let keys = endpoint.keys();
    assert_eq!(keys.len(), 2, "re-run exactly once: {keys:?}");
    assert!(!keys[0].is_empty() && keys[0] == keys[1], "the same Idempotency-Key both times: {keys:?}");
    let results = summary["tool_results"].as_array().unwrap();
    assert_eq!(results.last().unwrap()["payload"]["state"], "completed", "{results:?}");
    let told = llm.requests().last().unwrap().tool_results().join(" ");
    assert!(told.contains("ok") && !told.contains("outcome unknown"), "the model got the real result: {told}");
}

/// The approval's single execution is claimed, the call is in flight, the process dies: even for a tool
/// declared idempotent, an approved call is never executed a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_killed_after_its_execution_was_claimed_never_runs_twice() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("webhook__counter", json!({"n": 1})));
    llm.rule(When::LastIsToolResult, Reply::text("finished after the crash"));
    let mut endpoint = HeldEndpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env(&llm);
    let server = start(dir.path(), &env);
    let agent = agent_with_counter(&server.url, &endpoint.url, "always", true).await;
    let reply = api(
        reqwest::Method::POST,
        format!("{}/agents/{agent}/chat?wait=true", server.url),
        Some(json!({"text": "count once"})),
    )
    .await;
    assert_eq!(reply["status"], "waiting_for_approval", "{reply}");
    let (job_id, approval_id) = (reply["job_id"].as_str().unwrap(), reply["approval_id"].as_str().unwrap());
    api(
        reqwest::Method::POST,
        format!("{}/approvals/{approval_id}/decide", server.url),
        Some(json!({"decision": "approve", "reason": "go"})),
    )
    .await;
    endpoint.wait_for(1).await;
    let claimed = api(reqwest::Method::GET, format!("{}/approvals/{approval_id}", server.url), None).await;
    assert!(claimed["executed_at"].is_string(), "the execution was claimed before the call went out: {claimed}");
    server.kill();

    let restarted = start(dir.path(), &env);
    let job = wait_job(&restarted.url, job_id, |job| job["status"] == "completed").await;
    assert_eq!(job["result"]["response"], "finished after the crash");
    assert_eq!(endpoint.keys().len(), 1, "the approved call was executed once, not twice");
    let results = tool_results(&restarted.url, job_id).await;
    assert_eq!(results.last().unwrap()["payload"]["state"], "interrupted", "{results:?}");
    let told = llm.requests().last().unwrap().tool_results().join(" ");
    assert!(told.contains("outcome unknown"), "the model was told: {told}");
    let trail = api(reqwest::Method::GET, format!("{}/approvals/{approval_id}", restarted.url), None).await;
    let executed = trail["audit"].as_array().map(|audit| audit.iter().filter(|e| e["event"] == "executed").count());
    assert_eq!(executed, Some(1), "{trail}");
    restarted.kill();
}
