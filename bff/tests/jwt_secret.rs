//! The bff binary refuses to start with a JWT secret anyone could know: none at all (the
//! config file or environment left `[jwt]` out), the old published example secret, or one
//! shorter than 32 bytes — and says what to set. Only the explicit development flag lets a
//! weak secret through. (Before this, a bff started with nothing but a listen address accepted
//! admin tokens signed with the example secret.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use devkit::process::Guarded;

const EXAMPLE_SECRET: &str = "dev-only-secret-change-me-dev-only-secret";

/// Runs `bff serve` with only `env` (plus `args`) and returns its exit status (None: still
/// running after 20 s, then stopped) and what it wrote to stderr.
fn serve(args: &[&str], env: &[(&str, &str)]) -> (Option<std::process::ExitStatus>, String) {
    let dir = tempdir();
    let stderr_path = dir.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bff"));
    cmd.env_clear()
        .arg("serve")
        .args(args)
        .env("NOTIFY_HTTP__LISTEN", "127.0.0.1:0")
        .env("NOTIFY_LOG_FORMAT", "pretty")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = Guarded::spawn("bff", cmd).unwrap();
    let status = child.wait_timeout(Duration::from_secs(20));
    drop(child);
    let text = std::fs::read_to_string(&stderr_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (status, text)
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bff-jwt-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn refused(args: &[&str], env: &[(&str, &str)], says: &str) {
    let (status, stderr) = serve(args, env);
    let status = status.unwrap_or_else(|| panic!("the bff started ({args:?}, {env:?})"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(says) && stderr.contains("NOTIFY_JWT__SECRET"),
        "the error should say `{says}` and what to set:\n{stderr}"
    );
}

#[test]
fn a_bff_without_a_strong_secret_does_not_start() {
    // Nothing but a listen address.
    refused(&[], &[], "jwt.secret is not set");
    // The example config, as shipped.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/bff.example.toml");
    refused(
        &["--config", example.to_str().unwrap()],
        &[],
        "jwt.secret is not set",
    );
    // The secret the example configs used to carry.
    refused(&[], &[("NOTIFY_JWT__SECRET", EXAMPLE_SECRET)], "published");
    // Too short to resist guessing.
    refused(
        &[],
        &[("NOTIFY_JWT__SECRET", "0123456789abcdef0123456789abcde")],
        "31 bytes",
    );
}

#[test]
fn the_development_flag_lets_a_weak_secret_start() {
    let port = devkit::ports::reserve();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bff"));
    cmd.env_clear()
        .arg("serve")
        .env("NOTIFY_HTTP__LISTEN", &listen)
        .env("NOTIFY_JWT__SECRET", EXAMPLE_SECRET)
        .env("NOTIFY_JWT__ALLOW_WEAK_SECRET", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Guarded::spawn("bff", cmd).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            child.try_wait().is_none(),
            "with allow_weak_secret the bff serves"
        );
        if healthz(&listen) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bff did not answer /healthz on {listen} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /healthz` answered 200.
fn healthz(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}
