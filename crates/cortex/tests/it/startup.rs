//! Start-up through the binary (issue 12, points 13 and 19): settings that cannot work stop the process
//! with exit 2 and one message naming the setting; host names are accepted for `--listen`; the open file
//! limit is raised; the database and its directory are owner-only.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::process::{Server, binary, cortex, http};

/// Runs `cortex serve` with `envs` and asserts it exits 2 with one error naming `setting`.
fn refused(dir: &std::path::Path, envs: &[(&str, &str)], setting: &str) -> String {
    let mut command = cortex(dir);
    command.arg("serve").envs(envs.iter().copied());
    if !envs.iter().any(|(name, _)| *name == "CORTEX_LISTEN") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{envs:?}: {stderr}");
    assert!(stderr.contains(setting), "{envs:?} must name {setting}: {stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "{envs:?}: the error is printed once: {stderr}");
    stderr
}

#[test]
fn settings_that_cannot_work_exit_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    refused(dir.path(), &[("CORTEX_LOG", "[[[")], "CORTEX_LOG");
    refused(dir.path(), &[("CORTEX_API_KEY", "")], "CORTEX_API_KEY");
    refused(dir.path(), &[("CORTEX_HTTP_HEADER_TIMEOUT_SECONDS", "0")], "CORTEX_HTTP_HEADER_TIMEOUT_SECONDS");
    refused(dir.path(), &[("CORTEX_HTTP_IDLE_TIMEOUT_SECONDS", "99999")], "CORTEX_HTTP_IDLE_TIMEOUT_SECONDS");
    refused(dir.path(), &[("CORTEX_MAX_CONNECTIONS", "0")], "CORTEX_MAX_CONNECTIONS");
    refused(dir.path(), &[("CORTEX_LISTEN", "no-such-host.invalid:4000")], "CORTEX_LISTEN");
    assert!(!dir.path().join("cortex.db").exists(), "nothing was created by refused starts");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    refused(&file, &[], "CORTEX_DATA_DIR");

    // Nothing listens on port 1: PostgreSQL is unreachable.
    let url = "postgres://cortex@127.0.0.1:1/cortex";
    refused(dir.path(), &[("CORTEX_DATABASE_URL", url)], "CORTEX_DATABASE_URL");
}

#[test]
fn a_deleted_master_key_file_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    Server::start(dir.path(), &[]).kill();
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let stderr = refused(dir.path(), &[], "master.key");
    assert!(stderr.contains("CORTEX_MASTER_KEY is not set"), "{stderr}");
    assert!(!stderr.contains("does not match CORTEX_MASTER_KEY"), "{stderr}");
    assert!(stderr.contains("deleted"), "{stderr}");
}

#[test]
fn a_host_name_listens_the_file_limit_is_raised_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    // A low soft limit, as many shells and service managers set; the server raises it to the hard one.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" serve --listen localhost:0"])
        .arg(binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CORTEX_DATA_DIR", dir.path())
        .env("CORTEX_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("Cortex Plane listening on ").map(|rest| rest.to_owned()))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let url = url.expect("`--listen localhost:0` did not start");
    assert!(url.contains("127.0.0.1") || url.contains("[::1]"), "{url}");
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit raised to the hard one: {open_files}");

    for name in ["cortex.db", "cortex.db-wal", "cortex.db-shm", "cortex.lock", "master.key"] {
        let path = dir.path().join(name);
        if let Ok(metadata) = std::fs::metadata(&path) {
            let mode = metadata.permissions().mode();
            assert_eq!(mode & 0o077, 0, "{name} mode {mode:o}");
        } else {
            assert!(name != "cortex.db" && name != "master.key", "{name} missing");
        }
    }
    let fresh = tempfile::tempdir().unwrap();
    let nested = fresh.path().join("data");
    let server = Server::start(&nested, &[]);
    assert_eq!(http().get(format!("{}/healthz", server.url)).send().unwrap().status(), 200);
    server.kill();
    let mode = std::fs::metadata(&nested).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "a data dir the server creates is owner-only, mode {mode:o}");
}

/// The binary's start-up rebasing is a packed bitmap (`DT_RELR`, `build.rs`), not 1.8 MiB of
/// `R_X86_64_RELATIVE` entries read at every start; the binary is still position-independent.
#[test]
fn the_binary_rebases_itself_from_packed_relocations() {
    let output = Command::new("readelf").args(["-h", "-d"]).arg(binary()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let elf = String::from_utf8_lossy(&output.stdout);
    assert!(elf.contains("DYN (Position-Independent Executable file)"), "{elf}");
    assert!(elf.contains("(RELR)"), "no DT_RELR entry:\n{elf}");
}

include!("../../link/fingerprint.rs");

/// The linker's list of hot code (`link/hot-symbols.txt`, `build.rs`) was made for this dependency
/// graph. Function names change with it, and a list made for another one leaves an idle server's code
/// spread out again (18 → 30 MiB resident the one time it happened, docs/PERFORMANCE.md section 23).
#[test]
fn the_hot_symbol_list_was_made_for_these_dependencies() {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = std::fs::read_to_string(crate_dir.join("link/hot-symbols.txt")).unwrap();
    let current = dependency_fingerprint(&crate_dir.join("../..")).unwrap();
    assert_eq!(
        recorded_fingerprint(&list),
        Some(current.as_str()),
        "Cargo.lock or a manifest changed since link/hot-symbols.txt was made: build the release binary \
         (cargo build --release -p cortex) and run scripts/hot-symbols.sh target/release/cortex"
    );
}
