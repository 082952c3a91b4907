//! `cortex serve`, `migrate`, `worker`, `keys`: start-up, bootstrap and configuration errors.

use crate::process::{Server, cortex, http};

#[test]
fn serve_starts_from_an_empty_dir_and_prints_a_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let key = server.generated_key.clone().expect("a fresh install prints an admin key");
    assert!(key.starts_with("ctx_"));
    eprintln!("ready after {:?}", server.ready_after);
    let health = http().get(format!("{}/readyz", server.url)).send().unwrap();
    assert_eq!(health.status(), 200);
    let agents = http().get(format!("{}/agents", server.url)).bearer_auth(&key).send().unwrap();
    assert_eq!(agents.status(), 200);
    assert!(server.terminate().success(), "SIGTERM exits 0");

    let again = Server::start(dir.path(), &[]);
    assert!(again.generated_key.is_none(), "the key is printed only on the first start");
    again.kill();
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &[]);
    let second = cortex(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another cortex process"));
    first.kill();
}

#[test]
fn weak_bootstrap_keys_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for weak in ["changeme", "undefined", "short-key"] {
        let output =
            cortex(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]).env("CORTEX_API_KEY", weak).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{weak}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("CORTEX_API_KEY"), "{stderr}");
        assert!(
            !stderr.contains(weak) || weak == "changeme" || weak == "undefined",
            "the key itself is not echoed: {stderr}"
        );
    }
}

#[test]
fn a_strong_env_key_is_accepted_and_nothing_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let key = "k3J9xQ2mV8pL5rT1wZ7nB4cF6hD0gY2sQ8wE";
    let server = Server::start(dir.path(), &[("CORTEX_API_KEY", key)]);
    assert!(server.generated_key.is_none());
    let agents = http().get(format!("{}/agents", server.url)).bearer_auth(key).send().unwrap();
    assert_eq!(agents.status(), 200);
    server.kill();
}

#[test]
fn invalid_settings_exit_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str, &str); 6] = [
        (&["serve"], "CORTEX_LISTEN", "not-an-address"),
        (&["serve"], "CORTEX_DATABASE_URL", "mysql://x"),
        (&["serve"], "CORTEX_WORKER_CONCURRENCY", "0"),
        (&["serve"], "CORTEX_SHUTDOWN_GRACE_SECONDS", "0"),
        (&["serve"], "CORTEX_RETENTION_DAYS", "40000"),
        (&["serve"], "CORTEX_AUDIT_RETENTION_DAYS", "36501"),
    ];
    for (args, variable, value) in cases {
        let output = cortex(dir.path()).args(args).env(variable, value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(variable),
            "{variable}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let config = dir.path().join("cortex.toml");
    std::fs::write(&config, "listn = \"0.0.0.0:1\"\n").unwrap();
    let output = cortex(dir.path()).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field"));
    std::fs::write(&config, "retention_days = 40000\n").unwrap();
    let output = cortex(dir.path()).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CORTEX_RETENTION_DAYS"));
}

/// Session buffers older than `CORTEX_RETENTION_DAYS` are pruned by the running server; newer ones stay.
#[test]
fn old_session_buffers_are_pruned_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = |age_days: u64| {
        let job_dir = dir.path().join("sessions").join(uuid::Uuid::now_v7().to_string());
        std::fs::create_dir_all(&job_dir).unwrap();
        let file = std::fs::File::create(job_dir.join("session-001.jsonl")).unwrap();
        let written = std::time::SystemTime::now() - std::time::Duration::from_secs(age_days * 24 * 3600);
        file.set_modified(written).unwrap();
        job_dir
    };
    let (old, recent) = (buffer(8), buffer(6));
    let server = Server::start(dir.path(), &[("CORTEX_RETENTION_DAYS", "7")]);
    // Bounded wait for the other process's first pass, which runs at start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while old.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!old.exists(), "a buffer older than the retention period is pruned");
    assert!(recent.exists(), "a newer buffer stays");
    server.kill();
}

#[test]
fn worker_refuses_sqlite_and_migrate_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let worker = cortex(dir.path()).arg("worker").output().unwrap();
    assert_eq!(worker.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&worker.stderr).contains("PostgreSQL"));
    let migrate = cortex(dir.path()).arg("migrate").output().unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    assert!(String::from_utf8_lossy(&migrate.stdout).contains("schema version"));
}

#[test]
fn keys_can_be_managed_offline_and_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let created = cortex(dir.path()).args(["keys", "create", "--name", "ops", "--role", "operator"]).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let client = http();
    assert_eq!(client.get(format!("{}/agents", server.url)).bearer_auth(&key).send().unwrap().status(), 200);
    let listed = cortex(dir.path()).args(["keys", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("operator"));
    let prefix = key.split('_').nth(1).unwrap();
    assert!(cortex(dir.path()).args(["keys", "revoke", prefix]).output().unwrap().status.success());
    assert_eq!(client.get(format!("{}/agents", server.url)).bearer_auth(&key).send().unwrap().status(), 401);
    server.kill();
}

#[test]
fn a_wrong_master_key_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &[("CORTEX_MASTER_KEY", "a long enough passphrase one")]);
    first.kill();
    let output = cortex(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CORTEX_MASTER_KEY", "a different passphrase two")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Without CORTEX_MASTER_KEY a key file is generated with owner-only permissions.
    let fresh = tempfile::tempdir().unwrap();
    Server::start(fresh.path(), &[]).kill();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fresh.path().join("master.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "master.key must be private, mode {mode:o}");
}

#[test]
fn api_keys_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let key = "k3J9xQ2mV8pL5rT1wZ7nB4cF6hD0gY2sQ8wE";
    let mut child = cortex(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CORTEX_API_KEY", key)
        .env("CORTEX_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.strip_prefix("Cortex Plane listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let client = http();
    assert_eq!(client.get(format!("{url}/agents")).bearer_auth(key).send().unwrap().status(), 200);
    assert_eq!(client.get(format!("{url}/agents")).bearer_auth(format!("{key}x")).send().unwrap().status(), 401);
    assert_eq!(client.get(format!("{url}/agents?api_key={key}")).send().unwrap().status(), 400);
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.len() > 1000, "trace logging produced output");
    assert!(!logged.contains(key), "an API key appeared in the log");
}

/// Starts `cortex serve` with stderr in a file, waits for the listening line, stops it and returns what
/// it wrote to stderr.
fn stderr_of_a_start(dir: &std::path::Path, envs: &[(&str, &str)]) -> String {
    let log_path = dir.join("start.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = cortex(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let listening = lines.map_while(Result::ok).any(|line| line.starts_with("Cortex Plane listening on "));
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log_path).unwrap();
    assert!(listening, "the server did not start: {stderr}");
    stderr
}

#[test]
fn a_revoked_env_key_is_reported_at_start_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let key = "k3J9xQ2mV8pL5rT1wZ7nB4cF6hD0gY2sQ8wE";
    let server = Server::start(dir.path(), &[("CORTEX_API_KEY", key)]);
    let client = http();
    let keys: serde_json::Value =
        client.get(format!("{}/api-keys", server.url)).bearer_auth(key).send().unwrap().json().unwrap();
    let id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    let revoked = client.delete(format!("{}/api-keys/{id}", server.url)).bearer_auth(key).send().unwrap();
    assert_eq!(revoked.status(), 204);
    server.kill();

    let stderr = stderr_of_a_start(dir.path(), &[("CORTEX_API_KEY", key)]);
    assert!(stderr.contains("CORTEX_API_KEY names a key that was revoked"), "{stderr}");
    assert!(stderr.contains("cortex keys create"), "{stderr}");
    assert!(!stderr.contains(key), "the key itself is not echoed");
}

#[test]
fn rate_limits_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let key = "k3J9xQ2mV8pL5rT1wZ7nB4cF6hD0gY2sQ8wE";
    // 6 per minute: a burst of one request.
    let server = Server::start(dir.path(), &[("CORTEX_API_KEY", key), ("CORTEX_RATE_LIMIT_API_PER_MINUTE", "6")]);
    let client = http();
    assert_eq!(client.get(format!("{}/agents", server.url)).bearer_auth(key).send().unwrap().status(), 200);
    let limited = client.get(format!("{}/agents", server.url)).bearer_auth(key).send().unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    server.kill();
}

#[test]
fn local_users_created_offline_sign_in_to_the_dashboard() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut create = cortex(dir.path())
        .args(["user", "create", "--email", "Ada@Example.com", "--role", "operator", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    create.stdin.take().unwrap().write_all(b"correct horse battery\n").unwrap();
    let created = create.wait_with_output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let generated =
        cortex(dir.path()).args(["user", "create", "--email", "bob@example.com", "--role", "viewer"]).output().unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let bob_password = String::from_utf8_lossy(&generated.stdout).trim().to_owned();
    assert_eq!(bob_password.len(), 20, "a generated password is printed once");
    let duplicate =
        cortex(dir.path()).args(["user", "create", "--email", "ada@example.com", "--role", "viewer"]).output().unwrap();
    assert_eq!(duplicate.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("exists already"));
    let bad_role =
        cortex(dir.path()).args(["user", "create", "--email", "c@example.com", "--role", "none"]).output().unwrap();
    assert_eq!(bad_role.status.code(), Some(2));
    let bad_url = cortex(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CORTEX_PUBLIC_URL", "not a url")
        .output()
        .unwrap();
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("CORTEX_PUBLIC_URL"));

    let server = Server::start(dir.path(), &[]);
    let client = http();
    for (email, password, role) in
        [("ada@example.com", "correct horse battery", "operator"), ("bob@example.com", bob_password.as_str(), "viewer")]
    {
        let login = client
            .post(format!("{}/auth/login", server.url))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .unwrap();
        assert_eq!(login.status(), 200, "{email}");
        let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        let body: serde_json::Value = login.json().unwrap();
        assert_eq!(body["role"], role);
        let page = client.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().unwrap();
        assert_eq!(page.status(), 200);
    }
    server.kill();
}
