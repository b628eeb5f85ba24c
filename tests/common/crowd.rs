//! A made-up campaign audience with known answers: recipients in the 20s (edges included),
//! people just outside, bad rows, duplicates and opt-outs, written as CSV, SQLite or
//! PostgreSQL rows. Ages are relative to today in Asia/Seoul, the campaign's time zone.

use std::collections::BTreeSet;
use std::path::Path;

use jiff::civil::Date;
use jiff::{Span, Timestamp};

pub fn today_in_seoul() -> Date {
    Timestamp::now().in_tz("Asia/Seoul").unwrap().date()
}

/// A birth date `age` years before today, `days_earlier` days before that.
fn born(age: i16, days_earlier: i64) -> Date {
    today_in_seoul()
        .checked_sub(Span::new().years(age))
        .unwrap()
        .checked_sub(Span::new().days(days_earlier))
        .unwrap()
}

pub struct Crowd {
    /// name, phone as written, birth date, city; in file order.
    pub rows: Vec<[String; 4]>,
    /// Normalised phones that must get the message once each.
    pub eligible: BTreeSet<String>,
    /// Normalised phones that must never get it (outside the range, opted out).
    pub excluded: BTreeSet<String>,
    pub invalid: u64,
    pub duplicate: u64,
    /// The opt-out list's phones.
    pub suppressed: Vec<String>,
}

fn phone(n: usize) -> String {
    format!("010-5{:03}-{:04}", n / 10_000, n % 10_000)
}

/// The phone written in one of the forms sources use.
fn written(phone: &str, form: usize) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    match form % 4 {
        0 => phone.to_string(),
        1 => digits,
        2 => format!("{} {} {}", &digits[..3], &digits[3..7], &digits[7..]),
        _ => format!("+82 {}", &phone[1..]),
    }
}

/// `in_range` recipients in their 20s, plus the edges, outsiders, bad rows, two duplicates
/// and two opt-outs.
pub fn crowd(in_range: usize) -> Crowd {
    let mut crowd = Crowd {
        rows: Vec::new(),
        eligible: BTreeSet::new(),
        excluded: BTreeSet::new(),
        invalid: 0,
        duplicate: 0,
        suppressed: Vec::new(),
    };
    let push = |crowd: &mut Crowd, n: usize, birth: Date, eligible: bool| {
        let p = phone(n);
        crowd.rows.push([
            format!("사람{n}"),
            written(&p, n),
            birth.to_string(),
            "서울".into(),
        ]);
        if eligible {
            crowd.eligible.insert(p);
        } else {
            crowd.excluded.insert(p);
        }
    };
    for n in 0..in_range {
        let age = 20 + (n % 10) as i16;
        push(&mut crowd, n, born(age, (n % 300) as i64), true);
    }
    // The edges: turned 20 today, 29 until tomorrow (in); 20 tomorrow, 30 today (out).
    push(&mut crowd, 9001, born(20, 0), true);
    push(&mut crowd, 9002, born(30, -1), true);
    push(&mut crowd, 9003, born(20, -1), false);
    push(&mut crowd, 9004, born(30, 0), false);
    for n in 9100..9110 {
        push(&mut crowd, n, born(45, (n % 100) as i64), false);
    }
    // Bad rows, whatever their age.
    for bad in [
        [
            "".to_string(),
            phone(9201),
            born(25, 0).to_string(),
            "부산".into(),
        ],
        [
            "나쁜번호".into(),
            "02-123-4567".into(),
            born(25, 0).to_string(),
            "부산".into(),
        ],
        [
            "나쁜날짜".into(),
            phone(9203),
            "1999-02-30".into(),
            "부산".into(),
        ],
    ] {
        crowd.rows.push(bad);
        crowd.invalid += 1;
    }
    // The same phones again, written differently.
    for n in [1, 2] {
        let p = phone(n);
        crowd.rows.push([
            format!("또{n}"),
            written(&p, n + 1),
            born(25, 0).to_string(),
            "대구".into(),
        ]);
        crowd.duplicate += 1;
    }
    // Two opt-outs among the eligible.
    for n in [3, 4] {
        let p = phone(n);
        crowd.eligible.remove(&p);
        crowd.excluded.insert(p.clone());
        crowd.suppressed.push(written(&p, n + 2));
    }
    crowd
}

impl Crowd {
    pub fn total(&self) -> u64 {
        self.rows.len() as u64
    }

    pub fn write_csv(&self, path: &Path) {
        let mut writer = csv::Writer::from_path(path).unwrap();
        writer
            .write_record(["name", "phone", "birth_date", "city"])
            .unwrap();
        for row in &self.rows {
            writer.write_record(row).unwrap();
        }
        writer.flush().unwrap();
    }

    pub fn write_suppression(&self, path: &Path) {
        std::fs::write(path, self.suppressed.join("\n") + "\n").unwrap();
    }

    /// A SQLite file with a `users` table (birth dates as `YYYY-MM-DD` text).
    pub async fn write_sqlite(&self, path: &Path) {
        let mut db = super::sqlite_file(path).await;
        sqlx::query("CREATE TABLE users (name TEXT, phone TEXT, birth_date TEXT, city TEXT)")
            .execute(&mut db)
            .await
            .unwrap();
        for row in &self.rows {
            sqlx::query("INSERT INTO users VALUES ($1, $2, $3, $4)")
                .bind(&row[0])
                .bind(&row[1])
                .bind(&row[2])
                .bind(&row[3])
                .execute(&mut db)
                .await
                .unwrap();
        }
    }

    /// A PostgreSQL table `table` with `birth_date DATE`. A row whose date PostgreSQL itself
    /// refuses (1999-02-30) is stored with a NULL date, as such a database would hold it.
    pub async fn write_postgres(&self, url: &str, table: &str) {
        use sqlx::ConnectOptions as _;
        use std::str::FromStr as _;
        let mut db = sqlx::postgres::PgConnectOptions::from_str(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (name TEXT, phone TEXT, birth_date DATE, city TEXT)"
        )))
        .execute(&mut db)
        .await
        .unwrap();
        for row in &self.rows {
            let date = row[2].parse::<Date>().ok().map(|d| d.to_string());
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} VALUES ($1, $2, $3::date, $4)"
            )))
            .bind(&row[0])
            .bind(&row[1])
            .bind(date)
            .bind(&row[3])
            .execute(&mut db)
            .await
            .unwrap();
        }
    }
}
