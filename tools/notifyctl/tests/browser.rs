//! The pages in a real browser: `node --test e2e/browser/` (playwright-core driving Debian's
//! chromium, axe-core) against a `notifyctl up` of its own. Needs `make browser-deps` (make
//! test runs it): chromium from Debian and the two npm packages in `e2e/browser/node_modules`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use devkit::process::Guarded;

mod support;

#[test]
fn the_pages_work_in_chromium() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir()
            && browser_dir.join("node_modules/axe-core").is_dir(),
        "e2e/browser has no node_modules: run `make browser-deps` (make test does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "chromium is not installed: run `make browser-deps` (make test does)"
    );
    let up = support::up(&["--no-prometheus"], &[]);
    let out = up.dir.0.join("browser.log");
    let mut tests: Vec<_> = std::fs::read_dir(&browser_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    tests.sort();
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-concurrency=1"])
        .args(&tests)
        .current_dir(&browser_dir)
        .env("NOTIFY_STACK", up.dir.0.join("stack.json"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap());
    if let Ok(dir) = std::env::var("NOTIFY_SCREENSHOTS") {
        cmd.env("NOTIFY_SCREENSHOTS", dir);
    }
    let mut node = Guarded::spawn("node --test", cmd).unwrap();
    // A deadline against hanging, not a speed target.
    let status = node
        .wait_timeout(Duration::from_secs(100))
        .expect("the browser tests did not finish in 100 s");
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert!(status.success(), "browser tests failed:\n{log}\n{err}");
    println!("{log}");
}
