//! Credentials through the real binary (issue 15): a provider key added with `cortex credentials add`
//! (secret on standard input) serves the next `cortex chat` of a `google` agent over the
//! OpenAI-compatible wire, `cortex providers list` shows it, `cortex credentials rm` makes the next chat
//! fail clearly. The secret never appears in any command output, API answer, log line (captured at
//! debug) or in the bytes of the database files.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use cortex_testkit::fake_llm::{FakeLlm, Reply, When};
use serde_json::Value;

use crate::e2e::KEY;
use crate::process::{Server, client, cortex};

const SECRET: &str = "AIza-binary-test-secret-5e8a1c";

/// Runs a client command off the runtime (the fake model server lives on it), with `stdin` piped in.
async fn cli(data: &Path, url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let (data, url, stdin) = (data.to_path_buf(), url.to_owned(), stdin.map(str::to_owned));
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let Some(input) = stdin else {
            return client(&data, &url, KEY, &args.iter().map(String::as_str).collect::<Vec<_>>());
        };
        let mut child = cortex(&data)
            .args(&args)
            .env("CORTEX_URL", &url)
            .env("CORTEX_API_KEY", KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn out(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_by_the_cli_serves_chat_and_never_leaks() {
    let llm = FakeLlm::start().await;
    llm.rule(When::Always, Reply::text("gemini says hi"));
    llm.set_models(&["gemini-2.5-flash"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let env = [
        ("CORTEX_API_KEY", KEY),
        ("CORTEX_MASTER_KEY", "a passphrase for this test only"),
        ("CORTEX_LOG", "debug,sqlx=info,hyper=info,h2=info,tower=info"),
    ];
    let server = Server::start_logging_to(&data, &env, &log);
    let url = server.url.clone();
    let base = format!("{}/v1beta/openai", llm.url());
    let mut outputs = Vec::new();

    let agent = cli(
        &data,
        &url,
        &["agent", "create", "--name", "Gem", "--provider", "google", "--model", "gemini-2.5-flash"],
        None,
    )
    .await;
    assert!(agent.status.success(), "{}", out(&agent));

    let empty = cli(&data, &url, &["credentials", "add", "google"], Some("")).await;
    assert_eq!(empty.status.code(), Some(2), "an empty secret is a usage error: {}", out(&empty));
    let added =
        cli(&data, &url, &["credentials", "add", "google", "--base-url", &base], Some(&format!("{SECRET}\n"))).await;
    assert!(added.status.success(), "{}", out(&added));
    assert!(out(&added).contains("added llm credential google"), "{}", out(&added));
    outputs.push(out(&added));

    let listed = cli(&data, &url, &["credentials", "list"], None).await;
    assert!(out(&listed).contains("google") && out(&listed).contains("…8a1c"), "{}", out(&listed));
    outputs.push(out(&listed));
    outputs.push(out(&cli(&data, &url, &["credentials", "list", "--json"], None).await));
    let providers = cli(&data, &url, &["providers", "list", "--json"], None).await;
    outputs.push(out(&providers));
    let providers: Value = serde_json::from_slice(&providers.stdout).unwrap();
    let google = providers["items"].as_array().unwrap().iter().find(|p| p["name"] == "google").unwrap();
    assert_eq!(google["has_credential"], true);
    assert_eq!(google["reported_models"][0], "gemini-2.5-flash");
    let table = cli(&data, &url, &["providers", "list"], None).await;
    assert!(out(&table).contains("google") && out(&table).contains("yes"), "{}", out(&table));

    let chat = cli(&data, &url, &["chat", "gem", "hello"], None).await;
    assert!(chat.status.success(), "{}", out(&chat));
    assert!(out(&chat).contains("gemini says hi"), "{}", out(&chat));
    outputs.push(out(&chat));
    let request = llm.requests().pop().unwrap();
    assert_eq!(request.path, "/v1beta/openai/chat/completions");
    assert_eq!(request.header("authorization"), Some(format!("Bearer {SECRET}").as_str()));

    let removed = cli(&data, &url, &["credentials", "rm", "google"], None).await;
    assert!(removed.status.success(), "{}", out(&removed));
    let refused = cli(&data, &url, &["chat", "gem", "again"], None).await;
    assert_eq!(refused.status.code(), Some(1), "{}", out(&refused));
    assert!(out(&refused).contains("no_credential"), "{}", out(&refused));
    outputs.push(out(&refused));
    outputs.push(out(&cli(&data, &url, &["jobs", "list", "--json"], None).await));

    server.kill();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("llm.call") || logs.contains("model call"), "the model call was logged at debug");
    assert!(!logs.contains(SECRET), "the secret reached the logs");
    for output in &outputs {
        assert!(!output.contains(SECRET), "the secret reached an output: {output}");
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("cortex.db") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "secret in {}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "the database files were checked");
}
