//! Database sources through sqlx: SQLite (`sqlite://PATH`, relative to the working directory;
//! `sqlite:///abs/path`) and PostgreSQL (`postgres://...`). sqlx's `Any` driver cannot read a
//! PostgreSQL `DATE`, so each database has its own connection type and its own SQL, and both
//! return each row as one JSON object text: one decoding path, whatever the column types.
//!
//! The configured `query` is wrapped, never edited: `SELECT <row as JSON> FROM (query) AS q
//! WHERE q.birth_date BETWEEN $1 AND $2`, the bounds being the range's birth dates on the
//! campaign's date ([`AgeRange::birth_dates`]), so only rows in the age range leave the database.
//! Rows are streamed (`fetch`), never loaded whole. On SQLite, `birth_date` is compared as
//! `YYYY-MM-DD` text; on PostgreSQL it is cast to `date`, so a `DATE` or a text column both work.
//!
//! [`AgeRange::birth_dates`]: crate::recipient::AgeRange::birth_dates

use std::str::FromStr;

use futures_util::TryStreamExt as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{
    AssertSqlSafe, Column as _, ConnectOptions as _, Executor as _, Row as _, SqlSafeStr as _,
    Statement as _,
};
use tokio::sync::mpsc;

use super::{AgeFilter, OpenSource, READ_AHEAD, SourceError, SourceRow};
use crate::config::DatabaseUrl;
use crate::recipient::{InvalidRow, RowShape};

enum Connection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

fn database_error(url: &DatabaseUrl, error: impl std::fmt::Display) -> SourceError {
    SourceError::Database {
        url: url.to_string(),
        message: error.to_string(),
    }
}

async fn connect(url: &DatabaseUrl) -> Result<Connection, SourceError> {
    let fail = |error: sqlx::Error| database_error(url, error);
    if url.is_sqlite() {
        // Read-only: a campaign never writes to its source, and a missing file is an error
        // rather than a new empty database.
        let options = SqliteConnectOptions::from_str(url.expose())
            .map_err(fail)?
            .read_only(true);
        Ok(Connection::Sqlite(options.connect().await.map_err(fail)?))
    } else {
        let options = PgConnectOptions::from_str(url.expose()).map_err(fail)?;
        Ok(Connection::Postgres(options.connect().await.map_err(fail)?))
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The query's columns, from preparing it (no row is read).
async fn columns(connection: &mut Connection, query: &str) -> Result<Vec<String>, sqlx::Error> {
    let inner = format!("SELECT * FROM ({query}) AS q");
    let names = match connection {
        Connection::Sqlite(c) => c
            .prepare(AssertSqlSafe(inner.clone()).into_sql_str())
            .await?
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        Connection::Postgres(c) => c
            .prepare(AssertSqlSafe(inner.clone()).into_sql_str())
            .await?
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
    };
    Ok(names)
}

/// The age-filtered query, each row one JSON object text.
fn filtered_query(connection: &Connection, query: &str, columns: &[String]) -> String {
    let birth = quote_identifier("birth_date");
    match connection {
        Connection::Sqlite(_) => {
            let pairs: Vec<String> = columns
                .iter()
                .map(|c| format!("'{}', q.{}", c.replace('\'', "''"), quote_identifier(c)))
                .collect();
            format!(
                "SELECT json_object({}) FROM ({query}) AS q WHERE q.{birth} BETWEEN $1 AND $2",
                pairs.join(", ")
            )
        }
        Connection::Postgres(_) => format!(
            "SELECT row_to_json(q)::text FROM ({query}) AS q \
             WHERE q.{birth}::date BETWEEN $1::date AND $2::date"
        ),
    }
}

fn bounds(ages: AgeFilter) -> (String, String) {
    let (earliest, latest) = ages.range.birth_dates(ages.today);
    (earliest.to_string(), latest.to_string())
}

async fn prepare_source(
    url: &DatabaseUrl,
    query: &str,
) -> Result<(Connection, RowShape, Vec<String>), SourceError> {
    let mut connection = connect(url).await?;
    let names = columns(&mut connection, query)
        .await
        .map_err(|e| database_error(url, e))?;
    // Only a birth_date column can be filtered in SQL; an rrn column is for CSV files.
    if !names.iter().any(|n| n == "birth_date") {
        return Err(SourceError::MissingColumn {
            path: url.to_string(),
            source: crate::recipient::MissingColumn("birth_date"),
        });
    }
    let shape = RowShape::new(&names).map_err(|source| SourceError::MissingColumn {
        path: url.to_string(),
        source,
    })?;
    Ok((connection, shape, names))
}

pub(super) async fn open(
    url: &DatabaseUrl,
    query: &str,
    ages: AgeFilter,
) -> Result<OpenSource, SourceError> {
    let (connection, shape, names) = prepare_source(url, query).await?;
    let sql = filtered_query(&connection, query, &names);
    let columns = shape.kept.clone();
    let (sender, rows) = mpsc::channel(READ_AHEAD);
    let url = url.clone();
    tokio::spawn(async move {
        if let Err(error) = stream_rows(connection, sql, &shape, &names, ages, &sender).await {
            let _ = sender.send(Err(database_error(&url, error))).await;
        }
    });
    Ok(OpenSource { columns, rows })
}

async fn stream_rows(
    connection: Connection,
    sql: String,
    shape: &RowShape,
    names: &[String],
    ages: AgeFilter,
    sender: &mpsc::Sender<Result<SourceRow, SourceError>>,
) -> Result<(), sqlx::Error> {
    let (earliest, latest) = bounds(ages);
    let mut number = 0u64;
    let mut forward = async |json: String| -> bool {
        number += 1;
        let row = classify(shape, names, number, &json, ages);
        sender.send(Ok(row)).await.is_ok()
    };
    match connection {
        Connection::Sqlite(mut c) => {
            let mut rows = sqlx::query(AssertSqlSafe(sql))
                .bind(earliest)
                .bind(latest)
                .fetch(&mut c);
            while let Some(row) = rows.try_next().await? {
                if !forward(row.try_get::<String, _>(0)?).await {
                    break;
                }
            }
        }
        Connection::Postgres(mut c) => {
            let mut rows = sqlx::query(AssertSqlSafe(sql))
                .bind(earliest)
                .bind(latest)
                .fetch(&mut c);
            while let Some(row) = rows.try_next().await? {
                if !forward(row.try_get::<String, _>(0)?).await {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// One JSON row → the raw values in column order → a validated row. `number` is the row's
/// position in the query's result, reported as its line.
fn classify(
    shape: &RowShape,
    names: &[String],
    number: u64,
    json: &str,
    ages: AgeFilter,
) -> SourceRow {
    let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(json) {
        Ok(object) => object,
        Err(_) => {
            return SourceRow::Invalid(InvalidRow {
                line: number,
                field: "row",
                reason: "could not be decoded".into(),
            });
        }
    };
    let values: Vec<String> = names
        .iter()
        .map(|name| match object.get(name) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        })
        .collect();
    let fields: Vec<&str> = values.iter().map(String::as_str).collect();
    match shape.recipient(number, &fields) {
        // The query filtered on the birth date already; checked again so a database that
        // compares dates differently can never widen the campaign.
        Ok(recipient) if ages.range.contains(recipient.birth_date, ages.today) => {
            SourceRow::InRange(Box::new(recipient))
        }
        Ok(_) => SourceRow::OutOfRange,
        Err(invalid) => SourceRow::Invalid(invalid),
    }
}

/// `COUNT(*)` of the age-filtered query.
pub(super) async fn count(
    url: &DatabaseUrl,
    query: &str,
    ages: AgeFilter,
) -> Result<u64, SourceError> {
    let (connection, _, _) = prepare_source(url, query).await?;
    let (earliest, latest) = bounds(ages);
    let birth = quote_identifier("birth_date");
    let count: i64 = match connection {
        Connection::Sqlite(mut c) => {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM ({query}) AS q WHERE q.{birth} BETWEEN $1 AND $2"
            )))
            .bind(earliest)
            .bind(latest)
            .fetch_one(&mut c)
            .await
        }
        Connection::Postgres(mut c) => {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM ({query}) AS q \
             WHERE q.{birth}::date BETWEEN $1::date AND $2::date"
            )))
            .bind(earliest)
            .bind(latest)
            .fetch_one(&mut c)
            .await
        }
    }
    .map_err(|e| database_error(url, e))?;
    Ok(u64::try_from(count).unwrap_or(0))
}
