//! SQLite's one writer connection, lent to one transaction at a time.
//!
//! SQLite allows one writer, so every write transaction of a process queues for the same connection. A
//! sqlx pool of one connection did that queueing, at a price paid on every transaction: the checkout
//! tested the connection with a ping (a hand-off to the connection's thread and back), and the return
//! ran in a spawned task that pinged it again before the next transaction could have it (docs/
//! PERFORMANCE.md section 23). An embedded connection cannot go away, so here the connection sits
//! behind a mutex: a transaction takes the lock, sends `BEGIN`, and gives the lock back when it commits
//! or is dropped.
//!
//! Invariants:
//! - A [`WriterTx`] dropped without [`WriterTx::commit`] queues a `ROLLBACK` on the connection's thread
//!   before it releases the lock, and that thread runs commands in order, so the next transaction's
//!   `BEGIN` always comes after it (the way sqlx's own `Transaction` rolls back on drop).
//! - A `BEGIN` whose caller was cancelled before hearing the answer is rolled back by sqlx's connection
//!   thread itself, and so is a `COMMIT` sent but not heard back (the rollback queued by the drop is then
//!   skipped): a later transaction never becomes a savepoint inside an abandoned one.
//! - The connection is lent only through [`Writer::begin`] and, outside any transaction, [`Writer::lock`]
//!   (migrations, whose sqlx transactions roll back on drop the same way).
//! - After [`Writer::close`] every `begin` fails with `PoolClosed`, as a closed pool's did.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteTransactionManager};
use sqlx::{ConnectOptions, Connection};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

/// How long a transaction waits for the writer before failing, as the pool's acquire timeout did.
const WRITER_WAIT: Duration = Duration::from_secs(30);

/// The writer connection (`None` once closed).
pub(crate) struct Writer {
    conn: Arc<Mutex<Option<SqliteConnection>>>,
}

/// Exclusive use of the writer connection.
pub(crate) type WriterGuard = OwnedMappedMutexGuard<Option<SqliteConnection>, SqliteConnection>;

impl Writer {
    /// Opens the writer connection.
    pub(crate) async fn connect(options: &SqliteConnectOptions) -> Result<Writer, sqlx::Error> {
        Ok(Writer { conn: Arc::new(Mutex::new(Some(options.connect().await?))) })
    }

    /// Waits for the connection (outside any transaction).
    pub(crate) async fn lock(&self) -> Result<WriterGuard, sqlx::Error> {
        let guard = tokio::time::timeout(WRITER_WAIT, self.conn.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        OwnedMutexGuard::try_map(guard, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)
    }

    /// Begins a write transaction (SQLite's deferred `BEGIN`).
    pub(crate) async fn begin(&self) -> Result<WriterTx, sqlx::Error> {
        // Open from the start, as sqlx's own transaction: a `BEGIN` that fails or whose caller is
        // cancelled is followed by a rollback, which does nothing when no transaction started.
        let mut tx = WriterTx { conn: self.lock().await?, open: true };
        SqliteTransactionManager::begin(&mut tx.conn, None).await?;
        Ok(tx)
    }

    /// Closes the connection once the transaction holding it (if any) has ended; SQLite checkpoints its
    /// WAL when its last connection closes.
    pub(crate) async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

/// A write transaction on the writer connection; see the module's invariants.
pub(crate) struct WriterTx {
    conn: WriterGuard,
    open: bool,
}

impl WriterTx {
    /// Commits and gives the connection back.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        SqliteTransactionManager::commit(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriterTx {
    fn drop(&mut self) {
        if self.open {
            SqliteTransactionManager::start_rollback(&mut self.conn);
        }
    }
}

impl Deref for WriterTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriterTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx_core::transaction::TransactionManager;

    use super::{SqliteTransactionManager, Writer};

    async fn scratch() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("w.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let writer = Writer::connect(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)").execute(&mut *writer.lock().await.unwrap()).await.unwrap();
        (dir, writer)
    }

    async fn rows(writer: &Writer) -> Vec<i64> {
        sqlx::query_scalar("SELECT n FROM t ORDER BY n").fetch_all(&mut *writer.lock().await.unwrap()).await.unwrap()
    }

    /// The next transaction gets the connection as soon as one ends, without waiting for a task to give
    /// it back (a pool of one returned it from a spawned task, after a ping).
    #[tokio::test]
    async fn the_writer_is_free_the_moment_a_transaction_ends() {
        let (_dir, writer) = scratch().await;
        let tx = writer.begin().await.unwrap();
        assert!(writer.lock().now_or_never().is_none(), "the writer is lent to one transaction at a time");
        tx.commit().await.unwrap();
        let conn = writer.lock().now_or_never().expect("free once committed").unwrap();
        drop(conn);
        drop(writer.begin().await.unwrap());
        assert!(writer.lock().now_or_never().is_some(), "free once dropped");
        writer.close().await;
    }

    /// A transaction dropped without commit is rolled back before the next one begins, and the next one
    /// is a transaction of its own, not a savepoint inside the abandoned one.
    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back_before_the_next_begins() {
        let (_dir, writer) = scratch().await;
        let mut tx = writer.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.unwrap();
        drop(tx);
        let mut tx = writer.begin().await.unwrap();
        assert_eq!(SqliteTransactionManager::get_transaction_depth(&tx), 1);
        sqlx::query("INSERT INTO t VALUES (2)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&writer).await, [2]);

        // A `BEGIN` abandoned after one poll: sent, and either still unanswered or already answered
        // (whichever the connection's thread managed); both must leave no transaction behind.
        let mut begin = Box::pin(writer.begin());
        let _ = futures::poll!(&mut begin);
        drop(begin);
        let mut tx = writer.begin().await.unwrap();
        assert_eq!(SqliteTransactionManager::get_transaction_depth(&tx), 1);
        sqlx::query("INSERT INTO t VALUES (3)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&writer).await, [2, 3]);
        writer.close().await;
        assert!(matches!(writer.begin().await, Err(sqlx::Error::PoolClosed)));
    }
}
