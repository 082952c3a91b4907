//! Fault injection on a test's PostgreSQL database, without touching the shared server.
//!
//! A "restart" of PostgreSQL is simulated by terminating every backend connected to the test's own
//! database (`pg_terminate_backend`): pools, open transactions and `LISTEN` connections all drop at
//! once, exactly as clients see a server restart, while other tests on the same server are untouched.
//! Connections of one simulated process are told apart by their `application_name`.
//!
//! [`LossyProxy`] sits between a client and the server and can lose one commit acknowledgement: the
//! server commits, the client's connection drops before it hears so — the one fault after which a
//! client cannot know whether its transaction happened.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cortex_store::DatabaseConfig;
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::{TestStore, pg_admin_url};

impl TestStore {
    /// This store's database configuration with a PostgreSQL `application_name` and pool size, so a
    /// fault can target the connections of one simulated process. SQLite configurations are returned
    /// unchanged.
    pub fn named_config(&self, application_name: &str, max_connections: u32) -> DatabaseConfig {
        match &self.config {
            DatabaseConfig::Postgres { url, .. } => {
                let separator = if url.contains('?') { '&' } else { '?' };
                DatabaseConfig::Postgres {
                    url: format!("{url}{separator}application_name={application_name}"),
                    max_connections,
                }
            }
            sqlite => sqlite.clone(),
        }
    }

    /// Terminates the backends connected to this test's PostgreSQL database — all of them, or only
    /// those whose `application_name` matches — from an admin connection, and returns how many were
    /// signalled. Does nothing on SQLite.
    pub async fn terminate_backends(&self, application_name: Option<&str>) -> Result<i64, sqlx::Error> {
        let Some(database) = &self.pg_database else { return Ok(0) };
        let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await?;
        // Pick the victims first, then signal exactly those: in one statement PostgreSQL may evaluate
        // `pg_terminate_backend` before the other conditions and hit backends of other databases.
        let victims: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() \
             AND ($2::text IS NULL OR application_name = $2)",
        )
        .bind(database)
        .bind(application_name)
        .fetch_all(&mut admin)
        .await?;
        let terminated = sqlx::query_scalar(
            "SELECT COUNT(*) FROM unnest($1::int4[]) AS victim(pid) WHERE pg_terminate_backend(victim.pid)",
        )
        .bind(&victims)
        .fetch_one(&mut admin)
        .await?;
        admin.close().await?;
        Ok(terminated)
    }

    /// Takes an exclusive lock on `table` of this test's PostgreSQL database in an open transaction, so
    /// writers of that table wait (and can be caught waiting); dropping the [`TableLock`] releases it.
    pub async fn lock_table(&self, table: &str) -> Result<TableLock, sqlx::Error> {
        let DatabaseConfig::Postgres { url, .. } = &self.config else {
            return Err(sqlx::Error::Configuration("table locks need PostgreSQL".into()));
        };
        let mut connection = sqlx::PgConnection::connect(url).await?;
        sqlx::query("BEGIN").execute(&mut connection).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE \"{table}\" IN ACCESS EXCLUSIVE MODE")))
            .execute(&mut connection)
            .await?;
        Ok(TableLock { connection })
    }

    /// How many backends with this `application_name` wait on a lock in this test's database.
    pub async fn backends_waiting_on_a_lock(&self, application_name: &str) -> Result<i64, sqlx::Error> {
        let Some(database) = &self.pg_database else { return Ok(0) };
        let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await?;
        let waiting = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 \
             AND wait_event_type = 'Lock'",
        )
        .bind(database)
        .bind(application_name)
        .fetch_one(&mut admin)
        .await?;
        admin.close().await?;
        Ok(waiting)
    }
}

/// A table lock held by [`TestStore::lock_table`]; the lock ends with the connection.
pub struct TableLock {
    connection: sqlx::PgConnection,
}

impl TableLock {
    /// Ends the locking transaction.
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK").execute(&mut self.connection).await?;
        self.connection.close().await
    }
}

/// A TCP proxy in front of the test's PostgreSQL server that can cut the acknowledgement of one
/// commit. It speaks just enough of the wire protocol to find message boundaries; connections must
/// not use TLS (its URLs say `sslmode=disable`).
pub struct LossyProxy {
    port: u16,
    database_url: String,
    plan: Arc<CutPlan>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct CutPlan {
    /// While set, the next `COMMIT` of a transaction whose SQL text contained this marker is cut.
    marker: Mutex<Option<String>>,
    cuts: AtomicUsize,
}

impl LossyProxy {
    /// Starts a proxy to the server of `t` (PostgreSQL only).
    pub async fn start(t: &TestStore) -> std::io::Result<LossyProxy> {
        let DatabaseConfig::Postgres { url, .. } = &t.config else {
            return Err(std::io::Error::other("the lossy proxy needs PostgreSQL"));
        };
        let options = PgConnectOptions::from_str(url).map_err(std::io::Error::other)?;
        let upstream = (options.get_host().to_owned(), options.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let plan = Arc::new(CutPlan::default());
        let accept = tokio::spawn({
            let plan = plan.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (plan, upstream) = (plan.clone(), upstream.clone());
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            let _ = relay(client, server, &plan).await;
                        }
                    });
                }
            }
        });
        Ok(LossyProxy { port, database_url: url.clone(), plan, accept })
    }

    /// A configuration that reaches the test database through the proxy.
    pub fn config(&self, application_name: &str, max_connections: u32) -> DatabaseConfig {
        let (scheme, rest) = self.database_url.split_once("://").unwrap_or(("postgres", &self.database_url));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
        let separator = if path.contains('?') { '&' } else { '?' };
        DatabaseConfig::Postgres {
            url: format!(
                "{scheme}://{user}127.0.0.1:{}/{path}{separator}sslmode=disable&application_name={application_name}",
                self.port
            ),
            max_connections,
        }
    }

    /// Arms the fault: the next transaction whose SQL contains `marker` commits on the server, but
    /// its client sees the connection drop instead of the acknowledgement. SQL text travels only
    /// when a statement is first prepared on a connection, so arm before the client first runs it.
    pub fn cut_next_commit_after(&self, marker: &str) {
        if let Ok(mut armed) = self.plan.marker.lock() {
            *armed = Some(marker.to_owned());
        }
    }

    /// How many acknowledgements were cut so far.
    pub fn cuts(&self) -> usize {
        self.plan.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies messages both ways until either side closes or a planned cut completes.
async fn relay(client: TcpStream, server: TcpStream, plan: &CutPlan) -> std::io::Result<()> {
    // Messages are forwarded one by one: without this, Nagle's algorithm stalls every exchange.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let cutting = AtomicBool::new(false);
    let upstream = async {
        // The startup message has no type byte.
        let length = from_client.read_u32().await?;
        let mut startup = vec![0; (length as usize).saturating_sub(4)];
        from_client.read_exact(&mut startup).await?;
        to_server.write_all(&length.to_be_bytes()).await?;
        to_server.write_all(&startup).await?;
        let mut marked = false;
        loop {
            let (tag, body) = read_message(&mut from_client).await?;
            let text = String::from_utf8_lossy(&body);
            let armed = plan.marker.lock().ok().and_then(|marker| marker.clone());
            if let Some(marker) = armed
                && matches!(tag, b'P' | b'Q')
                && text.contains(&marker)
            {
                marked = true;
            }
            if tag == b'Q' && (text.starts_with("COMMIT") || text.starts_with("ROLLBACK")) {
                if marked
                    && text.starts_with("COMMIT")
                    && plan.marker.lock().ok().and_then(|mut marker| marker.take()).is_some()
                {
                    plan.cuts.fetch_add(1, Ordering::SeqCst);
                    cutting.store(true, Ordering::SeqCst);
                }
                marked = false;
            }
            write_message(&mut to_server, tag, &body).await?;
        }
    };
    let downstream = async {
        loop {
            let (tag, body) = read_message(&mut from_server).await?;
            if cutting.load(Ordering::SeqCst) {
                // Swallow the reply; once the server is ready again the commit has happened: hang up.
                if tag == b'Z' {
                    return Ok(());
                }
                continue;
            }
            write_message(&mut to_client, tag, &body).await?;
        }
    };
    tokio::select! {
        result = upstream => result,
        result = downstream => result,
    }
}

async fn read_message(from: &mut OwnedReadHalf) -> std::io::Result<(u8, Vec<u8>)> {
    let tag = from.read_u8().await?;
    let length = from.read_u32().await?;
    let mut body = vec![0; (length as usize).saturating_sub(4)];
    from.read_exact(&mut body).await?;
    Ok((tag, body))
}

async fn write_message(to: &mut OwnedWriteHalf, tag: u8, body: &[u8]) -> std::io::Result<()> {
    let mut message = Vec::with_capacity(body.len() + 5);
    message.push(tag);
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(body);
    to.write_all(&message).await
}
