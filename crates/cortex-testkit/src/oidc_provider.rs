//! A real OpenID Connect provider for sign-in tests: npm `oidc-provider` (panva, a certified
//! implementation) run by `test-peers/oidc-provider.mjs` on a free loopback port, with its development
//! login and consent forms. Any login name signs in as `<login>@example.com` (verified unless the login
//! starts with `unverified`). Installed by `scripts/install-test-peers.sh`; the process ends with the value.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

/// The running provider; the node process is killed when this is dropped.
pub struct RealOidcProvider {
    /// The issuer URL (`http://127.0.0.1:<port>`), where discovery starts.
    pub issuer: String,
    _process: tokio::process::Child,
}

impl RealOidcProvider {
    /// Starts the provider with one confidential client allowed to return to `redirect_uri`.
    /// Panics with the way out when the npm peer is not installed.
    pub async fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> RealOidcProvider {
        let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-peers");
        let installed = peers.join("node_modules/oidc-provider/package.json");
        assert!(
            installed.is_file(),
            "oidc-provider is not installed ({}); run scripts/install-test-peers.sh",
            installed.display()
        );
        let mut process = tokio::process::Command::new("node")
            .arg(peers.join("oidc-provider.mjs"))
            .env("CLIENT_ID", client_id)
            .env("CLIENT_SECRET", client_secret)
            .env("REDIRECT_URI", redirect_uri)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs test-peers/oidc-provider.mjs");
        let stdout = process.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.next_line().await.ok().flatten().expect("oidc-provider printed its issuer");
        let issuer = serde_json::from_str::<serde_json::Value>(&ready)
            .ok()
            .and_then(|line| line["issuer"].as_str().map(str::to_owned));
        RealOidcProvider { issuer: issuer.expect("a JSON line with the issuer"), _process: process }
    }
}
