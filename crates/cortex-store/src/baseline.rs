//! First start on SQLite: an empty database gets the schema of the migrations through [`THROUGH`] in one
//! transaction, from a generated snapshot (`migrations/sqlite_baseline.sql`), instead of running those
//! migrations one by one (issue 17).
//!
//! Why: SQLite re-parses its whole schema after each `ALTER TABLE`, so the 21 migrations cost ≈ 27 ms of
//! CPU in optimised SQLite (release), several times that unoptimised, on every first start; creating the
//! final objects directly costs ≈ 3.5 ms (docs/PERFORMANCE.md, "Start-up and idle memory").
//!
//! The snapshot is every object's `CREATE` text from `sqlite_schema` in creation order, then every row the
//! migrations left (e.g. `job_transition`, FTS5's configuration), so the database is the one the migrations
//! make; the migrations through [`THROUGH`] are then recorded in `_sqlx_migrations` as sqlx records them
//! (sqlx's own `skip`: version, description, checksum), and sqlx applies the later ones as usual. A database
//! that is not empty (an upgrade) is migrated step by step as before; PostgreSQL always is.
//!
//! Test `baseline::tests` checks the snapshot against the migrations and writes it with `CORTEX_BLESS=1`:
//! an edited old migration fails it; a new migration needs nothing (it runs after the snapshot), and moving
//! [`THROUGH`] forward is regenerating the file.

use sqlx::SqliteConnection;
use sqlx::migrate::{MigrateError, Migrator};

/// The last migration the snapshot contains.
pub(crate) const THROUGH: i64 = 44;

/// The snapshot: the schema and rows after the migrations through [`THROUGH`].
const SNAPSHOT: &str = include_str!("../migrations/sqlite_baseline.sql");

/// Migrates the database of `conn` (the writer) with `migrator`, starting an empty one from the snapshot.
pub(crate) async fn migrate_sqlite(migrator: &Migrator, conn: &mut SqliteConnection) -> Result<(), MigrateError> {
    {
        // IMMEDIATE: a second process starting on the same empty file waits here, then finds it created.
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let objects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_schema").fetch_one(&mut *tx).await?;
        if objects == 0 {
            sqlx::raw_sql(SNAPSHOT).execute(&mut *tx).await?;
            migrator.skip(&mut *tx, Some(THROUGH)).await?;
            tx.commit().await?;
        }
    }
    migrator.run(&mut *conn).await
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Arc;

    use cortex_core::clock::SystemClock;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    use sqlx::{AssertSqlSafe, ConnectOptions};

    use super::{SNAPSHOT, THROUGH};
    use crate::engine::{DatabaseConfig, SQLITE_MIGRATIONS, Store};

    /// Every object's `CREATE` text (creation order) and every row (sorted) of `conn`'s database as SQL,
    /// without sqlx's bookkeeping, FTS5 shadow tables' `CREATE`s (the virtual table makes them) and rows
    /// of virtual tables (their shadow tables hold them).
    async fn dump(conn: &mut SqliteConnection) -> String {
        let mut statements: Vec<String> = sqlx::query_scalar(
            "SELECT sql || ';' FROM sqlite_schema WHERE sql IS NOT NULL \
             AND name NOT IN ('sqlite_sequence', '_sqlx_migrations') \
             AND name NOT IN (SELECT name FROM pragma_table_list WHERE type = 'shadow') ORDER BY rowid",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name != '_sqlx_migrations' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY rowid",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for table in tables {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .bind(&table)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            let values =
                columns.iter().map(|column| format!("quote(\"{column}\")")).collect::<Vec<_>>().join(" || ', ' || ");
            let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT 'INSERT OR REPLACE INTO \"{table}\" VALUES (' || {values} || ');' FROM \"{table}\" ORDER BY 1"
            )))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            statements.extend(rows);
        }
        statements.join("\n") + "\n"
    }

    /// `(version, description, success, checksum)` of every recorded migration.
    async fn records(conn: &mut SqliteConnection) -> Vec<(i64, String, bool, Vec<u8>)> {
        sqlx::query_as("SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(conn)
            .await
            .unwrap()
    }

    async fn connect(path: &std::path::Path) -> SqliteConnection {
        SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap()
    }

    /// The database the migrations make one by one, through `through` (all with `None`).
    async fn migrated(path: &std::path::Path, through: Option<i64>) -> SqliteConnection {
        let mut conn = connect(path).await;
        match through {
            Some(version) => SQLITE_MIGRATIONS.run_to(version, &mut conn).await.unwrap(),
            None => SQLITE_MIGRATIONS.run(&mut conn).await.unwrap(),
        }
        conn
    }

    #[tokio::test]
    async fn the_snapshot_is_what_the_migrations_make() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(&dir.path().join("slow.db"), Some(THROUGH)).await;
        let expected = format!(
            "-- Generated by the cortex-store test `baseline::tests::the_snapshot_is_what_the_migrations_make`; do not edit.\n\
             -- The SQLite schema and rows after migrations/sqlite through version {THROUGH}: an empty database starts\n\
             -- from this (src/baseline.rs). Regenerate: CORTEX_BLESS=1 cargo test -p cortex-store --lib baseline\n{}",
            dump(&mut conn).await
        );
        if std::env::var_os("CORTEX_BLESS").is_some() {
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite_baseline.sql"), &expected).unwrap();
            return;
        }
        assert!(
            SNAPSHOT == expected,
            "migrations/sqlite_baseline.sql is not what the migrations through {THROUGH} make; regenerate it with \
             CORTEX_BLESS=1 cargo test -p cortex-store --lib baseline"
        );
    }

    #[tokio::test]
    async fn an_empty_database_starts_from_the_snapshot_and_an_older_one_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let mut slow = migrated(&dir.path().join("slow.db"), None).await;
        let (slow_dump, slow_records) = (dump(&mut slow).await, records(&mut slow).await);
        assert!(slow_records.iter().any(|(version, ..)| *version == THROUGH));

        // Empty: the snapshot, then any later migration; migrating again changes nothing.
        let config = DatabaseConfig::Sqlite { path: dir.path().join("fresh.db") };
        let store = Store::open(&config, Arc::new(SystemClock)).await.unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let mut fresh = crate::engine::sqlite_writer(&store).await;
        assert_eq!(dump(&mut fresh).await, slow_dump);
        assert_eq!(records(&mut fresh).await, slow_records);
        drop(fresh);
        store.close().await;

        // Not empty (an upgrade from an older version): migrated step by step to the same database.
        let path = dir.path().join("older.db");
        migrated(&path, Some(13)).await;
        let store = Store::open(&DatabaseConfig::Sqlite { path }, Arc::new(SystemClock)).await.unwrap();
        store.migrate().await.unwrap();
        let mut upgraded = crate::engine::sqlite_writer(&store).await;
        assert_eq!(dump(&mut upgraded).await, slow_dump);
        assert_eq!(records(&mut upgraded).await, slow_records);
        drop(upgraded);
        store.close().await;
    }
}
