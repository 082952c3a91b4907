//! A headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.
//!
//! Why our own client rather than `chromiumoxide` (STACK §11): the tests need a handful of commands
//! (navigate, evaluate, screenshot, emulate) and `chromiumoxide` costs ~65 s of compile time on a 2-core
//! CI machine for its generated bindings. The protocol runs over `--remote-debugging-pipe` (NUL-terminated
//! JSON on the child's fd 3 and 4, mapped by `sh` from its stdin/stdout), so neither a WebSocket crate nor
//! a debugging port is needed, and no other local process can attach to the browser.
//!
//! Waits are deterministic: [`Page::wait_for`] evaluates a promise in the page that resolves when a DOM
//! condition holds (checked by the page on every animation frame and DOM mutation), never a fixed sleep;
//! only an overall deadline bounds it. Chromium runs with a fresh profile and every background service
//! off, so it talks to nothing but the loopback server under test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// How long a wait or a command may take before the test fails with what it was waiting for.
pub const DEADLINE: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// The Chromium binary: `CORTEX_TEST_CHROMIUM`, else `chromium` (Debian) or `chromium-browser` on `PATH`.
pub fn chromium_path() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CORTEX_TEST_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let dirs = std::env::var("PATH").unwrap_or_default();
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&dirs).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Browser tests are skipped only when asked (`CORTEX_TEST_SKIP_BROWSER=1`); otherwise a missing
/// Chromium fails them (`scripts/test-services.sh` installs it).
pub fn skip_browser() -> bool {
    std::env::var("CORTEX_TEST_SKIP_BROWSER").is_ok_and(|value| value == "1")
}

/// Where screenshots go: `target/ui-screenshots/` of the workspace (or `CORTEX_UI_SCREENSHOTS`).
pub fn screenshot_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CORTEX_UI_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("ui-screenshots")
}

/// A running headless Chromium; killed when dropped.
pub struct Browser {
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    next_id: AtomicU64,
    /// Page errors (uncaught exceptions, console errors, CSP violations) per session.
    problems: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

/// One tab, attached through a flattened session.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Browser {
    /// Starts Chromium headless with a fresh profile; panics with the reason when it cannot.
    pub async fn launch() -> Browser {
        let chromium = chromium_path().expect(
            "Chromium is not installed: run scripts/test-services.sh (apt-get install chromium) \
             or set CORTEX_TEST_SKIP_BROWSER=1",
        );
        let profile = tempfile::tempdir().expect("a profile directory");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("a log file");
        // `sh` maps its stdin/stdout pipes to the fds 3 and 4 that --remote-debugging-pipe uses.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 </dev/null >/dev/null")
            .arg(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--metrics-recording-only",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", chromium.display()));
        let stdin = child.stdin.take().expect("chromium stdin");
        let stdout = child.stdout.take().expect("chromium stdout");
        let pending: Pending = Arc::default();
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        tokio::spawn(read_loop(BufReader::new(stdout), pending.clone(), problems.clone()));
        Browser {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next_id: AtomicU64::new(1),
            problems,
            _profile: profile,
        }
    }

    async fn send(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (sender, receiver) = oneshot::channel();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, sender);
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        {
            let mut stdin = self.stdin.lock().await;
            stdin.write_all(&bytes).await.map_err(|err| format!("chromium pipe closed: {err}"))?;
            stdin.flush().await.map_err(|err| format!("chromium pipe closed: {err}"))?;
        }
        match tokio::time::timeout(DEADLINE, receiver).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("chromium exited".into()),
            Err(_) => Err(format!("{method}: no answer within {DEADLINE:?}")),
        }
    }

    /// Opens a new tab at `about:blank` with the given viewport.
    pub async fn page(&self, width: u32, height: u32) -> Page<'_> {
        let target = self.send(None, "Target.createTarget", json!({"url": "about:blank"})).await.expect("new tab");
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self
            .send(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}))
            .await
            .expect("attach to tab");
        let session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        let page = Page { browser: self, session };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await;
        }
        page.viewport(width, height, false).await;
        page
    }

    /// Errors the pages reported so far (uncaught exceptions, console errors, blocked resources).
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn read_loop(
    mut reader: BufReader<tokio::process::ChildStdout>,
    pending: Pending,
    problems: Arc<Mutex<Vec<String>>>,
) {
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(0, &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buffer.last() == Some(&0) {
            buffer.pop();
        }
        let Ok(message) = serde_json::from_slice::<Value>(&buffer) else { continue };
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            let answer = match message.get("error") {
                Some(error) => Err(error.to_string()),
                None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
            };
            if let Some(sender) = pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id) {
                let _ = sender.send(answer);
            }
            continue;
        }
        let params = &message["params"];
        let problem = match message["method"].as_str() {
            Some("Runtime.exceptionThrown") => Some(format!(
                "exception: {}",
                params["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .or(params["exceptionDetails"]["text"].as_str())
                    .unwrap_or("?")
            )),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                Some(format!("console.error: {}", params["args"]))
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => Some(format!(
                "{}: {} {}",
                params["entry"]["source"].as_str().unwrap_or("log"),
                params["entry"]["text"].as_str().unwrap_or(""),
                params["entry"]["url"].as_str().unwrap_or("")
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            problems.lock().unwrap_or_else(PoisonError::into_inner).push(problem);
        }
    }
    // Chromium is gone: every caller still waiting gets an error instead of hanging.
    pending.lock().unwrap_or_else(PoisonError::into_inner).clear();
}

impl Page<'_> {
    /// One protocol command on this tab; a protocol error fails the test.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.browser
            .send(Some(&self.session), method, params)
            .await
            .unwrap_or_else(|err| panic!("{method} failed: {err}"))
    }

    /// Sets the viewport (CSS pixels); `mobile` emulates a phone (touch, meta viewport honoured).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// Emulates `prefers-color-scheme` (`light` or `dark`).
    pub async fn color_scheme(&self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// Navigates to `url` and waits until the new document has loaded.
    pub async fn goto(&self, url: &str) {
        let answer = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(error) = answer.get("errorText").and_then(Value::as_str) {
            panic!("navigating to {url}: {error}");
        }
        self.wait_for("document.readyState === 'complete'", &format!("{url} to load")).await;
    }

    /// Evaluates `expression` (awaiting a promise) and returns its JSON value, or the page's error.
    pub async fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let answer = self
            .browser
            .send(
                Some(&self.session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true, "userGesture": true}),
            )
            .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            return Err(details["exception"]["description"].as_str().unwrap_or("exception").to_owned());
        }
        Ok(answer["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Evaluates `expression`; an exception fails the test.
    pub async fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression).await.unwrap_or_else(|err| panic!("evaluating `{expression}`: {err}"))
    }

    /// Waits until the JavaScript `condition` is truthy in the current document, across navigations
    /// (a document replaced while waiting is checked again). Fails the test after [`DEADLINE`] with
    /// `what`, the page's URL and its visible text.
    pub async fn wait_for(&self, condition: &str, what: &str) {
        let script = format!(
            "new Promise((resolve) => {{
               const check = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
               if (check()) {{ resolve(true); return; }}
               const observer = new MutationObserver(() => {{ if (check()) {{ observer.disconnect(); resolve(true); }} }});
               observer.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
               const frame = () => {{ if (check()) {{ observer.disconnect(); resolve(true); }} else {{ requestAnimationFrame(frame); }} }};
               requestAnimationFrame(frame);
             }})"
        );
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                // A navigation destroys the context the promise lives in: ask the new document.
                if let Ok(Value::Bool(true)) = self.try_eval(&script).await {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        if waited.is_err() {
            let state = self
                .try_eval("location.href + '\\n' + (document.body ? document.body.innerText : '')")
                .await
                .unwrap_or_default();
            let problems = self.browser.problems();
            panic!("waited {DEADLINE:?} for {what} (`{condition}`); the page: {state}; page errors: {problems:#?}");
        }
    }

    /// Waits for an element matching `selector`.
    pub async fn wait_for_selector(&self, selector: &str) {
        self.wait_for(&format!("document.querySelector({})", json!(selector)), &format!("`{selector}`")).await;
    }

    /// Waits for the URL's path (and query) to be `path`, and the document to have loaded.
    pub async fn wait_for_path(&self, path: &str) {
        let quoted = json!(path);
        self.wait_for(
            &format!("(location.pathname + location.search) === {quoted} && document.readyState === 'complete'"),
            &format!("the page {path}"),
        )
        .await;
    }

    /// Sets the value of the form field `selector` as a user would (input and change events fire).
    pub async fn fill(&self, selector: &str, value: &str) {
        self.eval(&format!(
            "(() => {{ const field = document.querySelector({}); if (!field) throw new Error('no field ' + {0});
               field.focus(); field.value = {}; field.dispatchEvent(new Event('input', {{bubbles: true}}));
               field.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
            json!(selector),
            json!(value)
        ))
        .await;
    }

    /// Clicks the element matching `selector`.
    pub async fn click(&self, selector: &str) {
        self.eval(&format!(
            "(() => {{ const element = document.querySelector({}); if (!element) throw new Error('nothing matches ' + {0});
               element.click(); return true; }})()",
            json!(selector)
        ))
        .await;
    }

    /// Clicks the first element matching `selector` whose text contains `text`.
    pub async fn click_text(&self, selector: &str, text: &str) {
        self.eval(&format!(
            "(() => {{ const element = [...document.querySelectorAll({})].find((e) => e.textContent.includes({}));
               if (!element) throw new Error('no ' + {0} + ' with ' + {1}); element.click(); return true; }})()",
            json!(selector),
            json!(text)
        ))
        .await;
    }

    /// The visible text of the element matching `selector` (empty when there is none).
    pub async fn text(&self, selector: &str) -> String {
        self.eval(&format!("(document.querySelector({}) || {{innerText: ''}}).innerText", json!(selector)))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The current path and query.
    pub async fn path(&self) -> String {
        self.eval("location.pathname + location.search").await.as_str().unwrap_or_default().to_owned()
    }

    /// Writes a PNG of the whole page (not only the viewport) to [`screenshot_dir`]`/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let width = size["width"].as_f64().unwrap_or(1280.0).ceil();
        let height = size["height"].as_f64().unwrap_or(800.0).ceil().min(8000.0);
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
            )
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).expect("screenshot is base64");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }

    /// The cookies the browser holds for `url`, as `name=value` pairs.
    pub async fn cookies(&self, url: &str) -> Vec<(String, String)> {
        let answer = self.call("Network.getCookies", json!({"urls": [url]})).await;
        answer["cookies"]
            .as_array()
            .map(|cookies| {
                cookies
                    .iter()
                    .map(|cookie| {
                        (
                            cookie["name"].as_str().unwrap_or_default().to_owned(),
                            cookie["value"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
