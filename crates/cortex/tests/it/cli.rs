//! Client subcommands against a running server.

use serde_json::Value;

use crate::process::{Server, client, cortex};

#[test]
fn agent_and_job_commands_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let key = server.generated_key.clone().unwrap();
    let prompt = dir.path().join("prompt.md");
    std::fs::write(&prompt, "You are terse.").unwrap();

    let created = client(
        dir.path(),
        &server.url,
        &key,
        &["agent", "create", "--name", "Scout", "--tool", "echo", "--system-prompt", &format!("@{}", prompt.display())],
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("created agent scout"));

    let listed = client(dir.path(), &server.url, &key, &["agent", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("scout"));

    let shown = client(dir.path(), &server.url, &key, &["agent", "show", "scout", "--json"]);
    let agent: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(agent["system_prompt"], "You are terse.");
    assert_eq!(agent["tools"][0], "echo");

    let missing = client(dir.path(), &server.url, &key, &["agent", "show", "nobody"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    let jobs = client(dir.path(), &server.url, &key, &["jobs", "list", "--json"]);
    assert!(jobs.status.success());
    server.kill();
}

#[test]
fn client_exit_codes_for_usage_and_unreachable_servers() {
    let dir = tempfile::tempdir().unwrap();
    let no_key = cortex(dir.path()).args(["agent", "list"]).env("CORTEX_URL", "http://127.0.0.1:9").output().unwrap();
    assert_eq!(no_key.status.code(), Some(2));
    let unreachable = client(
        dir.path(),
        "http://127.0.0.1:9",
        "ctx_AAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
        &["agent", "list"],
    );
    assert_eq!(unreachable.status.code(), Some(4));
    let bad_usage = cortex(dir.path()).args(["agent", "frobnicate"]).output().unwrap();
    assert_eq!(bad_usage.status.code(), Some(2));
}
