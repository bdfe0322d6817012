//! Real infrastructure for one machine and for tests: the Kafka mock cluster (librdkafka's,
//! real protocol over TCP), an SMTP catcher, an nginx runner and per-test Postgres databases.
//!
//! Used by `notifyctl up` (the local stack) and by every integration test. It does not depend
//! on `common`, so `common`'s own tests can use it.

pub mod http_sink;
pub mod kafka;
pub mod nginx;
pub mod otlp;
pub mod pg;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod serve;
pub mod smtp;
pub mod tasks;

/// Test-only keys (`fixtures/README.md`), also used by the local stack's fake providers.
pub mod fixtures {
    /// An RSA key for the fake FCM service account.
    pub const RSA_PRIVATE_PEM: &str = include_str!("../fixtures/rsa_private.pem");
    /// A P-256 key standing in for an APNs `.p8`.
    pub const EC_P256_PRIVATE_PEM: &str = include_str!("../fixtures/ec_p256_private.pem");
}

/// A loopback port for a process that must bind it itself, reserved for this process's
/// lifetime so no other test or tool can take it meanwhile ([`ports`]).
pub fn free_port() -> u16 {
    ports::reserve()
}

/// Makes a child started with `cmd` receive SIGTERM when the process that started it dies,
/// so a killed launcher or test leaves nothing running.
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    }
}
