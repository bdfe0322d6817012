//! Delivery state has one writer: this crate. The test reads every Rust source of the
//! workspace outside it (tests and tools excepted: they build fixtures) and fails on a
//! statement that writes a delivery's status. `STILL_OUTSIDE` lists what issue 14 has not
//! moved yet; it may only shrink.

use std::path::{Path, PathBuf};

/// Writers not moved into the crate yet (path from the workspace root).
const STILL_OUTSIDE: [&str; 1] = [
    // Intake inserts the planned deliveries (pending / queued / suppressed).
    "notification-service/src/db/notifications.rs",
];

const WRITES: [&str; 4] = [
    "SET status",
    "INSERT INTO deliveries",
    ", status = ",
    "status = CASE",
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

#[test]
fn no_delivery_status_is_written_outside_the_lifecycle_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    sources(root, &mut files);
    assert!(files.len() > 50, "read only {} files", files.len());
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests at the end of a file build fixtures too.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        if let Some(w) = WRITES.iter().find(|w| code.contains(*w)) {
            if !STILL_OUTSIDE.contains(&rel.as_str()) {
                found.push(format!("{rel}: `{w}`"));
            }
        } else if STILL_OUTSIDE.contains(&rel.as_str()) {
            found.push(format!(
                "{rel} no longer writes a status: take it off STILL_OUTSIDE"
            ));
        }
    }
    assert!(
        found.is_empty(),
        "delivery status written outside the delivery crate (move it into delivery/src):\n{}",
        found.join("\n")
    );
}
