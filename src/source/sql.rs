//! Database sources through sqlx: SQLite (`sqlite://PATH`, relative to the working directory;
//! `sqlite:///abs/path`) and PostgreSQL (`postgres://...`). sqlx's `Any` driver cannot read a
//! PostgreSQL `DATE`, so each database has its own connection type and its own SQL, and both
//! return each row as one JSON object text: one decoding path, whatever the column types.
//!
//! The configured `query` is wrapped, never edited: `SELECT <row as JSON> FROM (query) AS q
//! WHERE <age condition>`, the bounds being the range's birth dates on the campaign's date
//! ([`AgeRange::birth_dates`]), so only rows in the age range — and rows whose birth date msgsend
//! must judge itself ([`age_condition`]) — leave the database. Rows are streamed (`fetch`), never
//! loaded whole. Every row the query returns is counted: in range, out of range, or invalid.
//!
//! [`AgeRange::birth_dates`]: crate::recipient::AgeRange::birth_dates

use std::str::FromStr;

use futures_util::TryStreamExt as _;
use futures_util::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgConnection, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, Column as _, ConnectOptions as _, SqlSafeStr as _, Statement as _};
use tokio::sync::mpsc;

use super::{AgeFilter, OpenSource, READ_AHEAD, ReadRow, SourceError, SourceRow};
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
    // No statement logging: the operator's query may hold personal data in its literals, and
    // sqlx would log a slow one (a COUNT over millions of rows) at WARN.
    if url.is_sqlite() {
        // Read-only: a campaign never writes to its source, and a missing file is an error
        // rather than a new empty database.
        let options = SqliteConnectOptions::from_str(url.expose())
            .map_err(fail)?
            .read_only(true)
            .disable_statement_logging();
        Ok(Connection::Sqlite(options.connect().await.map_err(fail)?))
    } else {
        warn_without_tls(url);
        // Read-only like the SQLite source: the operator's query may call a function that
        // writes, and a campaign (a dry run above all) must never change its source.
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(fail)?
            .options([("default_transaction_read_only", "on")])
            .disable_statement_logging();
        Ok(Connection::Postgres(options.connect().await.map_err(fail)?))
    }
}

/// A PostgreSQL source off this machine without TLS required: names and phones (and the
/// password's exchange) could travel in clear. sqlx's default `sslmode=prefer` falls back to
/// plain text silently, so this says so.
fn warn_without_tls(url: &DatabaseUrl) {
    if travels_in_clear(url.expose()) {
        tracing::warn!(
            database = %url,
            "the source database is not on this machine and TLS is not required: add ?sslmode=require (or verify-full)"
        );
    }
}

/// Whether a `postgres://` URL names another machine without requiring TLS.
fn travels_in_clear(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    // No host is a Unix socket: this machine too.
    let loopback = parsed.host().is_none() || crate::config::security::is_loopback(&parsed);
    let required = parsed.query_pairs().any(|(name, value)| {
        name == "sslmode" && matches!(&*value, "require" | "verify-ca" | "verify-full")
    });
    !loopback && !required
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The operator's query as a subquery `(…) AS q`. Trailing `;`s are dropped (a statement
/// terminator cannot stand inside parentheses), and the query stands on lines of its own, so a
/// trailing `-- comment` ends before the closing parenthesis.
fn subquery(query: &str) -> String {
    let mut query = query.trim_end();
    while let Some(rest) = query.strip_suffix(';') {
        query = rest.trim_end();
    }
    format!("(\n{query}\n) AS q")
}

/// The query's columns, from preparing it (no row is read).
async fn columns(connection: &mut Connection, query: &str) -> Result<Vec<String>, sqlx::Error> {
    let inner = format!("SELECT * FROM {}", subquery(query));
    match connection {
        Connection::Sqlite(c) => column_names(c, inner).await,
        Connection::Postgres(c) => column_names(c, inner).await,
    }
}

async fn column_names<'c>(
    executor: impl sqlx::Executor<'c>,
    sql: String,
) -> Result<Vec<String>, sqlx::Error> {
    let statement = executor.prepare(AssertSqlSafe(sql).into_sql_str()).await?;
    Ok(statement
        .columns()
        .iter()
        .map(|column| column.name().to_string())
        .collect())
}

/// The age filter on the wrapped query `q`, with the bounds as `$1` and `$2` and the
/// campaign's date as `$3`. It can only drop rows whose birth date is a real `YYYY-MM-DD` date
/// outside the range and not in the future (a future one is invalid, judged in Rust): a missing,
/// malformed or impossible one (NULL, `'garbage'`, a datetime, a number) goes through, so
/// msgsend judges it and counts it `invalid` — no row the query returns vanishes, and none
/// makes the database raise an error (a failed cast would end the campaign).
///
/// On SQLite, `date(x) IS x` holds exactly for a real date written `YYYY-MM-DD` (SQLite
/// normalises anything else). On PostgreSQL the value is compared as text when it has that
/// shape — `YYYY-MM-DD` text sorts like the dates it names — and goes through otherwise; a
/// `DATE` column reads as that text. An impossible date with the right shape that sorts
/// outside the range (`1950-02-30` in a campaign for the 20s) is dropped there like an
/// out-of-range row: PostgreSQL has no cast that says "not a date" without failing.
fn age_condition(connection: &Connection) -> String {
    let birth = format!("q.{}", quote_identifier("birth_date"));
    match connection {
        Connection::Sqlite(_) => format!(
            "({birth} IS NULL OR date({birth}) IS NOT {birth} \
             OR {birth} BETWEEN $1 AND $2 OR {birth} > $3)"
        ),
        Connection::Postgres(_) => format!(
            "(CASE WHEN {birth} IS NULL THEN true \
             WHEN {birth}::text ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$' \
             THEN {birth}::text BETWEEN $1 AND $2 OR {birth}::text > $3 ELSE true END)"
        ),
    }
}

/// The age-filtered query, each row one JSON object text.
fn filtered_query(connection: &Connection, query: &str, columns: &[String]) -> String {
    let row_as_json = match connection {
        Connection::Sqlite(_) => {
            let pairs: Vec<String> = columns
                .iter()
                .map(|c| {
                    // JSON holds no BLOB: such a value reads as missing (a BLOB birth date is
                    // then an invalid row) instead of failing the whole query.
                    let column = format!("q.{}", quote_identifier(c));
                    format!(
                        "'{}', CASE typeof({column}) WHEN 'blob' THEN NULL ELSE {column} END",
                        c.replace('\'', "''")
                    )
                })
                .collect();
            format!("json_object({})", pairs.join(", "))
        }
        Connection::Postgres(_) => "row_to_json(q)::text".to_string(),
    };
    format!(
        "SELECT {row_as_json} FROM {} WHERE {}",
        subquery(query),
        age_condition(connection)
    )
}

/// Runs `sql`, whose rows are one value each, with the age bounds bound to `$1` and `$2` and
/// the campaign's date to `$3`, on whichever database this is.
fn scalars<'c, T>(
    connection: &'c mut Connection,
    sql: String,
    ages: AgeFilter,
) -> BoxStream<'c, Result<T, sqlx::Error>>
where
    T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    T: Send + Unpin + 'c,
{
    let (earliest, latest) = ages.range.birth_dates(ages.today);
    let [earliest, latest, today] = [earliest, latest, ages.today].map(|d| d.to_string());
    match connection {
        Connection::Sqlite(c) => sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(earliest)
            .bind(latest)
            .bind(today)
            .fetch(c),
        Connection::Postgres(c) => sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(earliest)
            .bind(latest)
            .bind(today)
            .fetch(c),
    }
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
    mut connection: Connection,
    sql: String,
    shape: &RowShape,
    names: &[String],
    ages: AgeFilter,
    sender: &mpsc::Sender<Result<ReadRow, SourceError>>,
) -> Result<(), sqlx::Error> {
    let mut rows = scalars::<String>(&mut connection, sql, ages);
    let mut number = 0u64;
    while let Some(json) = rows.try_next().await? {
        number += 1;
        let row = classify(shape, names, number, &json, ages);
        // A query's order is not stable between runs: its rows have no start to resume at.
        let row = ReadRow { row, start: None };
        if sender.send(Ok(row)).await.is_err() {
            break;
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
    // The query filtered on the birth date already; judged again so a database that compares
    // dates differently can never widen the campaign.
    super::judge(shape, shape.recipient(number, &fields), ages)
}

/// `COUNT(*)` of the age-filtered query.
pub(super) async fn count(
    url: &DatabaseUrl,
    query: &str,
    ages: AgeFilter,
) -> Result<u64, SourceError> {
    let (mut connection, _, _) = prepare_source(url, query).await?;
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE {}",
        subquery(query),
        age_condition(&connection)
    );
    let count: Option<i64> = scalars(&mut connection, sql, ages)
        .try_next()
        .await
        .map_err(|e| database_error(url, e))?;
    Ok(count.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::travels_in_clear;

    #[test]
    fn only_a_remote_database_without_required_tls_is_in_clear() {
        assert!(travels_in_clear("postgres://app:pw@db.example/crm"));
        assert!(travels_in_clear(
            "postgres://app@db.example/crm?sslmode=prefer"
        ));
        assert!(!travels_in_clear(
            "postgres://app@db.example/crm?sslmode=require"
        ));
        assert!(!travels_in_clear(
            "postgres://app@db.example/crm?sslmode=verify-full"
        ));
        assert!(!travels_in_clear("postgres://app@127.0.0.1:5432/crm"));
        assert!(!travels_in_clear("postgres://app@localhost/crm"));
    }
}
