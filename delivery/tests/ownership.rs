//! Who may touch the database, checked over every Rust source of the workspace (tests, tools
//! and e2e excepted: they build fixtures; unit tests at the end of a file too):
//!
//! - **delivery state has one writer, this crate**: no statement outside it writes a
//!   delivery's status, and no SQL outside it names a status as a literal;
//! - **SQL lives in `db` modules**: a query outside `db/`, `db.rs`, this crate and `common`'s
//!   plumbing (outbox, database bootstrap) fails the test — routes, planning and the stuck
//!   scan call functions instead.

use std::path::{Path, PathBuf};

const WRITES: [&str; 4] = [
    "SET status",
    "INSERT INTO deliveries",
    ", status = ",
    "status = CASE",
];

const SQL: [&str; 5] = [
    "sqlx::query",
    "query_as(",
    "query_scalar(",
    "QueryBuilder",
    "query_as::<",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | "tests" | "tools" | "delivery" | "e2e" | "node_modules"
            ) && !name.starts_with('.')
            {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every source outside this crate as (path from the workspace root, code before its unit
/// tests).
fn workspace() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    sources(root, &mut files);
    assert!(files.len() > 50, "read only {} files", files.len());
    files
        .into_iter()
        .map(|file| {
            let rel = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_owned();
            (rel, code)
        })
        .collect()
}

#[test]
fn no_delivery_status_is_written_outside_the_lifecycle_crate() {
    let mut found = Vec::new();
    for (rel, code) in workspace() {
        if let Some(w) = WRITES.iter().find(|w| code.contains(*w)) {
            found.push(format!("{rel}: `{w}`"));
        }
        for status in delivery::Status::ALL {
            let literal = format!("'{}'", status.as_str());
            if code.contains(&literal) {
                found.push(format!("{rel}: the SQL literal {literal}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "delivery status written or named outside the delivery crate (move it into delivery/src, bind `Status`):\n{}",
        found.join("\n")
    );
}

#[test]
fn sql_lives_in_db_modules() {
    let mut found = Vec::new();
    for (rel, code) in workspace() {
        let allowed = rel.contains("/db/") || rel.ends_with("/db.rs") || rel.starts_with("common/");
        if allowed {
            continue;
        }
        if let Some(q) = SQL.iter().find(|q| code.contains(*q)) {
            found.push(format!("{rel}: `{q}`"));
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside a db module (move the query into the service's db/ and call it):\n{}",
        found.join("\n")
    );
}

/// The guard itself: a file with a query in a route would be caught.
#[test]
fn the_guard_sees_a_query_where_it_does_not_belong() {
    let code = r#"let n: i64 = sqlx::query_scalar("SELECT 1").fetch_one(pool).await?;"#;
    assert!(SQL.iter().any(|q| code.contains(q)));
    let write = "UPDATE deliveries SET status = $1";
    assert!(WRITES.iter().any(|w| write.contains(w)));
}
