//! Connections, migrations, transactions and the dispatch macros that run one method body on either
//! engine.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cortex_core::Timestamp;
use cortex_core::clock::Clock;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::events::NewEvent;
use crate::notify::{Notification, Notifier, PG_CHANNEL};
use crate::sqlite_writer::{Writer, WriterTx};
use crate::{Result, StoreError};

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// Embedded SQLite file (single process, enforced by a lock file beside it).
    Sqlite { path: PathBuf },
    /// PostgreSQL shared by any number of processes.
    Postgres { url: String, max_connections: u32 },
}

pub(crate) enum Engine {
    /// One writer connection (SQLite allows one writer; queueing in-process avoids `SQLITE_BUSY`
    /// storms) and a pool of readers (WAL lets them run beside the writer).
    Sqlite {
        write: Writer,
        read: SqlitePool,
        _lock: File,
    },
    Postgres {
        pool: PgPool,
        url: String,
    },
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) notifier: Notifier,
    /// PostgreSQL `LISTEN` task, started by the first subscriber so that short-lived stores (migrate,
    /// CLI) hold no extra connection.
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When set, writing and closing sessions queues memory extraction (see [`crate::extraction`]).
    pub(crate) extraction: std::sync::OnceLock<crate::extraction::ExtractionPolicy>,
    /// Write transactions begun through this store (see [`Store::transactions_begun`]).
    transactions: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("engine", &self.engine_name()).finish()
    }
}

/// Runs `$body` with `$conn` bound to a read executor of whichever engine backs `$store`.
macro_rules! read {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.inner.engine {
            $crate::engine::Engine::Sqlite { read, .. } => {
                let $conn = read;
                $body
            }
            $crate::engine::Engine::Postgres { pool, .. } => {
                let $conn = pool;
                $body
            }
        }
    };
}

/// Runs `$body` with `$conn` bound to the open transaction of `$tx`.
macro_rules! write {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut $tx.conn {
            $crate::engine::TxConn::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::engine::TxConn::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

pub(crate) use {read, write};

pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connects without migrating. SQLite creates the file (and its directory) when missing and takes
    /// an exclusive lock so a second process on the same data fails fast.
    pub async fn open(config: &DatabaseConfig, clock: Arc<dyn Clock>) -> Result<Store> {
        Self::open_with(config, clock, true).await
    }

    /// Opens without the SQLite process lock, for short administrative commands (`cortex keys …`) that
    /// write a row beside a running server; SQLite serialises the writes itself.
    pub async fn open_shared(config: &DatabaseConfig, clock: Arc<dyn Clock>) -> Result<Store> {
        Self::open_with(config, clock, false).await
    }

    async fn open_with(config: &DatabaseConfig, clock: Arc<dyn Clock>, exclusive: bool) -> Result<Store> {
        let engine = match config {
            DatabaseConfig::Sqlite { path } => open_sqlite(path, exclusive).await?,
            DatabaseConfig::Postgres { url, max_connections } => {
                let pool = PgPoolOptions::new()
                    .max_connections(*max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await
                    .map_err(StoreError::Unavailable)?;
                Engine::Postgres { pool, url: url.clone() }
            }
        };
        let listener = std::sync::Mutex::new(None);
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                clock,
                notifier: Notifier::new(),
                listener,
                extraction: std::sync::OnceLock::new(),
                transactions: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Applies pending migrations (each in its own transaction; an empty SQLite database starts from the
    /// snapshot of the first ones in one, see [`crate::baseline`]). Safe with concurrent starters on
    /// PostgreSQL: the migrator holds an advisory lock.
    pub async fn migrate(&self) -> Result<()> {
        match &self.inner.engine {
            Engine::Sqlite { write, .. } => match write.lock().await {
                Ok(mut conn) => crate::baseline::migrate_sqlite(&SQLITE_MIGRATIONS, &mut conn).await,
                Err(err) => Err(err.into()),
            },
            Engine::Postgres { pool, .. } => POSTGRES_MIGRATIONS.run(pool).await,
        }
        .map_err(|err| match err {
            sqlx::migrate::MigrateError::Execute(inner) => StoreError::from(inner),
            other => StoreError::Corrupt(format!("migration failed: {other}")),
        })
    }

    /// Latest applied schema version, for diagnostics.
    pub async fn schema_version(&self) -> Result<i64> {
        let version: Option<i64> = read!(self, |conn| {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(conn).await?
        });
        Ok(version.unwrap_or(0))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn engine_name(&self) -> &'static str {
        match self.inner.engine {
            Engine::Sqlite { .. } => "sqlite",
            Engine::Postgres { .. } => "postgres",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.inner.engine, Engine::Postgres { .. })
    }

    /// Cheap liveness check used by `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        read!(self, |conn| sqlx::query("SELECT 1")
            .execute(conn)
            .await
            .map_err(StoreError::Unavailable)?
            .rows_affected());
        Ok(())
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// How many write transactions were begun through this store's handles (all clones share it): the
    /// per-turn statement budget (issue 17) counts transactions with it, since SQLite's `BEGIN` and
    /// `COMMIT` do not pass through sqlx's statement log.
    pub fn transactions_begun(&self) -> u64 {
        self.inner.transactions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `(id, label)` of the rows with these ids, read by `select` (a `SELECT id, <label> FROM <table> WHERE
    /// id IN (` prefix): one query over a page's distinct ids, for naming the rows a page refers to.
    pub(crate) async fn labels_by_id(
        &self,
        select: &'static str,
        ids: &[uuid::Uuid],
    ) -> Result<std::collections::HashMap<uuid::Uuid, String>> {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.is_empty() {
            return Ok(Default::default());
        }
        let rows: Vec<(uuid::Uuid, String)> = read!(self, |conn| {
            let mut query = sqlx::QueryBuilder::new(select);
            let mut list = query.separated(", ");
            for id in &unique {
                list.push_bind(*id);
            }
            query.push(")");
            query.build_query_as().fetch_all(conn).await?
        });
        Ok(rows.into_iter().collect())
    }

    /// Subscribes to change notifications (see [`crate::notify`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notification> {
        let receiver = self.inner.notifier.subscribe();
        if let Engine::Postgres { url, .. } = &self.inner.engine
            && let Ok(mut listener) = self.inner.listener.lock()
            && listener.is_none()
        {
            *listener = Some(spawn_pg_listener(url.clone(), self.inner.notifier.clone()));
        }
        receiver
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        self.inner.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = match &self.inner.engine {
            Engine::Sqlite { write, .. } => TxConn::Sqlite(write.begin().await?),
            Engine::Postgres { pool, .. } => TxConn::Postgres(pool.begin().await?),
        };
        Ok(Tx {
            conn,
            store: self.clone(),
            events: Vec::new(),
            notifications: Vec::new(),
            touched_sessions: Vec::new(),
            memory_seqs: Vec::new(),
            created_sessions: Vec::new(),
            bulk_jobs: std::collections::HashSet::new(),
        })
    }

    /// Closes every connection (used at shutdown so SQLite checkpoints its WAL).
    pub async fn close(&self) {
        if let Some(task) = self.inner.listener.lock().ok().and_then(|mut listener| listener.take()) {
            task.abort();
        }
        match &self.inner.engine {
            Engine::Sqlite { write, read, .. } => {
                read.close().await;
                write.close().await;
            }
            Engine::Postgres { pool, .. } => pool.close().await,
        }
    }
}

/// Creates the database file owner-only before SQLite opens it (SQLite gives its `-wal` and `-shm` files
/// the database file's mode), and its directory owner-only when it has to create it.
fn private_database_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

async fn open_sqlite(path: &std::path::Path, exclusive: bool) -> Result<Engine> {
    private_database_file(path).map_err(|err| StoreError::Unavailable(sqlx::Error::Io(err)))?;
    let lock_path = path.with_extension("lock");
    let lock = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&lock_path)
    }
    .map_err(|err| StoreError::Unavailable(sqlx::Error::Io(err)))?;
    if exclusive && lock.try_lock().is_err() {
        return Err(StoreError::Locked(format!(
            "{} is in use by another cortex process (lock {}); SQLite mode runs one process per data dir — use PostgreSQL to run several",
            path.display(),
            lock_path.display()
        )));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Durable against process crashes (the WAL is written before commit returns); only an OS crash
        // or power loss can drop the last commits, the usual WAL trade-off.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let write = Writer::connect(&options).await.map_err(StoreError::Unavailable)?;
    // An embedded connection cannot go away, so sqlx's test of a reader on every checkout (a hand-off
    // to the connection's thread and back, in front of each query) is switched off.
    let read = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .idle_timeout(READER_IDLE_TIMEOUT)
        .connect_with(options.read_only(true).pragma("cache_size", format!("-{READER_CACHE_KIB}")))
        .await
        .map_err(StoreError::Unavailable)?;
    Ok(Engine::Sqlite { write, read, _lock: lock })
}

/// Page cache of each SQLite reader connection, in KiB (SQLite's default is 2,000 KiB per connection).
/// Up to eight readers each fill their own cache as the database grows, which made a server's memory
/// climb for most of an hour (docs/PERFORMANCE.md, "Start-up and idle memory"); pages a reader misses
/// come from the operating system's file cache instead. The writer keeps the default.
const READER_CACHE_KIB: u32 = 512;

/// A reader connection unused this long is closed, so the readers a load spike opened (each with its own
/// page cache, statement cache and thread) do not stay for sqlx's default ten minutes.
const READER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Forwards `NOTIFY cortex` payloads into the in-process notifier, reconnecting forever.
fn spawn_pg_listener(url: String, notifier: Notifier) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match PgListener::connect(&url).await {
                Ok(mut listener) => {
                    if let Err(err) = listener.listen(PG_CHANNEL).await {
                        tracing::warn!(error = %err, "LISTEN failed");
                    } else {
                        backoff = Duration::from_millis(100);
                        // Anything sent while we were away is lost: tell subscribers to re-read.
                        notifier.publish(Notification::Resync);
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(message)) => match crate::notify::unpack(message.payload()) {
                                    // Already published in-process at commit.
                                    Ok((origin, _)) if origin == notifier.origin() => {}
                                    Ok((_, notifications)) => {
                                        for notification in notifications {
                                            notifier.publish(notification);
                                        }
                                    }
                                    Err(err) => {
                                        tracing::warn!(error = %err, "unreadable notification")
                                    }
                                },
                                Ok(None) => {
                                    // Connection lost; sqlx reconnects on the next call.
                                    notifier.publish(Notification::Resync);
                                }
                                Err(err) => {
                                    tracing::warn!(error = %err, "notification listener failed");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot connect notification listener"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

pub(crate) enum TxConn {
    Sqlite(WriterTx),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// An open write transaction. Dropping it without [`Tx::commit`] rolls everything back, including
/// buffered events and notifications.
pub struct Tx {
    pub(crate) conn: TxConn,
    pub(crate) store: Store,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) notifications: Vec<Notification>,
    /// Sessions whose jobs changed; re-checked for promotion at commit (see [`crate::jobs`]).
    pub(crate) touched_sessions: Vec<uuid::Uuid>,
    /// Agents whose memory records this transaction wrote, with the change sequence it took for each
    /// (see [`crate::memory`]).
    pub(crate) memory_seqs: Vec<(uuid::Uuid, i64)>,
    /// Sessions inserted by this transaction: no other transaction can see them (nor have jobs in them)
    /// before it commits, so a job created in one needs neither the session lock nor the busy check.
    pub(crate) created_sessions: Vec<uuid::Uuid>,
    /// Jobs inserted by this transaction's bulk path ([`Tx::insert_jobs`]): their ids were made here and
    /// nobody can be waiting on them, so their events need no notification of their own (see
    /// [`crate::events::flush`]).
    pub(crate) bulk_jobs: std::collections::HashSet<uuid::Uuid>,
}

impl Tx {
    pub(crate) fn now(&self) -> Timestamp {
        self.store.now()
    }

    /// The store clock's current time, for callers computing deadlines inside the transaction.
    pub fn clock_now(&self) -> Timestamp {
        self.store.now()
    }

    /// Buffers an event; it is written at commit, after every other statement of the transaction.
    pub fn emit(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// Queues a notification to publish once the transaction commits.
    pub fn notify(&mut self, notification: Notification) {
        if !self.notifications.contains(&notification) {
            self.notifications.push(notification);
        }
    }

    /// Writes buffered events, commits, then wakes subscribers.
    pub async fn commit(mut self) -> Result<()> {
        self.promote_sessions().await?;
        let events = std::mem::take(&mut self.events);
        let mut notifications = std::mem::take(&mut self.notifications);
        if self.store.is_postgres() {
            // The events and the `NOTIFY`s (delivered at commit) in one statement.
            notifications = crate::events::flush_postgres(&mut self, events, notifications).await?;
        } else {
            notifications.extend(crate::events::flush_sqlite(&mut self, events).await?);
        }
        match self.conn {
            TxConn::Sqlite(tx) => tx.commit().await?,
            TxConn::Postgres(tx) => tx.commit().await?,
        }
        // On PostgreSQL this process's subscribers learn of the change at once, not when `LISTEN` delivers
        // it back (the listener drops that echo): a local idle worker claims without the round trip, a
        // waiting chat request answers, and a memory search right after a write sees it.
        for notification in notifications {
            self.store.inner.notifier.publish(notification);
        }
        Ok(())
    }
}

/// A migrated SQLite store in a fresh temporary directory, for unit tests that look at SQLite's plans.
/// The directory lives as long as the returned guard.
#[cfg(test)]
pub(crate) async fn scratch_sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfig::Sqlite { path: dir.path().join("cortex.db") };
    let store = Store::open(&config, std::sync::Arc::new(cortex_core::clock::SystemClock)).await.unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

/// The writer connection of a SQLite `store`, for tests; drop it before closing the store.
#[cfg(test)]
pub(crate) async fn sqlite_writer(store: &Store) -> crate::sqlite_writer::WriterGuard {
    let Engine::Sqlite { write, .. } = &store.inner.engine else { panic!("not SQLite") };
    write.lock().await.unwrap()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cortex_core::clock::SystemClock;

    use super::{DatabaseConfig, Engine, READER_CACHE_KIB, READER_IDLE_TIMEOUT, Store};

    /// `PRAGMA cache_size` as a connection reports it (negative: KiB).
    async fn cache_size(conn: impl sqlx::SqliteExecutor<'_>) -> i64 {
        sqlx::query_scalar("PRAGMA cache_size").fetch_one(conn).await.unwrap()
    }

    #[tokio::test]
    async fn sqlite_readers_have_a_bounded_page_cache_and_close_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig::Sqlite { path: dir.path().join("cortex.db") };
        let store = Store::open(&config, Arc::new(SystemClock)).await.unwrap();
        let Engine::Sqlite { read, .. } = &store.inner.engine else { panic!("not SQLite") };
        assert_eq!(cache_size(read).await, -i64::from(READER_CACHE_KIB));
        assert_eq!(read.options().get_idle_timeout(), Some(READER_IDLE_TIMEOUT));
        // The writer keeps SQLite's default (2,000 KiB).
        let mut write = super::sqlite_writer(&store).await;
        assert_eq!(cache_size(&mut *write).await, -2000);
        drop(write);
        store.close().await;
    }

    /// SQLite is built with its query planner stability guarantee (`.cargo/config.toml`): without it a
    /// statement with a bound `LIMIT` is parsed and planned again on every execution.
    #[tokio::test]
    async fn sqlite_plans_do_not_depend_on_bound_values() {
        let options = sqlite_compile_options().await;
        assert!(options.iter().any(|option| option == "ENABLE_QPSG"), "{options:?}");
    }

    /// SQLite keeps no memory statistics (`.cargo/config.toml`): with them every allocation of every
    /// connection thread takes one process-wide mutex.
    #[tokio::test]
    async fn sqlite_allocates_without_a_global_lock() {
        let options = sqlite_compile_options().await;
        assert!(options.iter().any(|option| option == "DEFAULT_MEMSTATUS=0"), "{options:?}");
    }

    /// The options the linked SQLite was compiled with (`PRAGMA compile_options`), from a scratch store.
    async fn sqlite_compile_options() -> Vec<String> {
        let (_dir, store) = super::scratch_sqlite().await;
        let mut write = super::sqlite_writer(&store).await;
        let options = sqlx::query_scalar("PRAGMA compile_options").fetch_all(&mut *write).await.unwrap();
        drop(write);
        store.close().await;
        options
    }
}
