//! Conversions between database values and domain values.

use std::str::FromStr;

use cortex_core::Timestamp;

use crate::StoreError;

/// Unix milliseconds as stored.
pub(crate) fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn opt_ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(ms)
}

pub(crate) fn time(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(crate) fn opt_time(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(time)
}

/// A time column as stored (Unix milliseconds). Records derive `sqlx::FromRow` themselves and mark each
/// time field `#[sqlx(try_from = "Millis")]`, so no row twin repeats their fields and no hand-written
/// conversion copies them one by one.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
pub(crate) struct Millis(i64);

impl From<Millis> for Timestamp {
    fn from(value: Millis) -> Self {
        time(value.0)
    }
}

/// A nullable time column, for `#[sqlx(try_from = "OptMillis")]` (see [`Millis`]).
#[derive(sqlx::Type)]
#[sqlx(transparent)]
pub(crate) struct OptMillis(Option<i64>);

impl From<OptMillis> for Option<Timestamp> {
    fn from(value: OptMillis) -> Self {
        opt_time(value.0)
    }
}

/// Parses an enum column. Status columns have CHECK constraints and kinds and event types are written
/// from typed values, so a failure is a sign of corruption or of a row written by a newer version.
pub(crate) fn parse<T: FromStr>(column: &str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|err| StoreError::Corrupt(format!("{column}: {err}")))
}

/// Decodes a JSON document column into its typed form.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    column: &str,
    value: serde_json::Value,
) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|err| StoreError::Corrupt(format!("{column}: {err}")))
}

/// Encodes a typed document for a JSON column.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> sqlx::types::Json<serde_json::Value> {
    sqlx::types::Json(serde_json::to_value(value).unwrap_or(serde_json::Value::Null))
}

/// Ids as one SQLite parameter: a JSON array of their hex forms, which `SELECT unhex(value) FROM
/// json_each($n)` turns back into the 16-byte blobs SQLite stores. SQLite has no array parameters, and one
/// bound list keeps a statement's text (and its prepared statement) the same whatever the count.
pub(crate) fn sqlite_id_list(ids: impl IntoIterator<Item = uuid::Uuid>) -> String {
    let hex: Vec<String> = ids.into_iter().map(|id| id.simple().to_string()).collect();
    serde_json::Value::from(hex).to_string()
}
