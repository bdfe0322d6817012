//! Ports for processes that cannot be handed a bound listener (nginx, a second Redis, the
//! launcher's services): picked so that nothing else can take them between the pick and the
//! bind.
//!
//! Binding port 0, reading the number and releasing it (the usual trick) races: the kernel
//! hands the same number to the next `bind(0)` or outgoing connection of any process, and two
//! test processes running at once can pick the same one. Here a port is taken
//!
//! * **below the kernel's ephemeral range** (`/proc/sys/net/ipv4/ip_local_port_range`), so
//!   the kernel never assigns it to a `bind(0)` or an outgoing connection, and
//! * **reserved by an exclusive lock** on `<tmp>/notify-ports/<port>.lock`, held until this
//!   process exits (the kernel releases it even after SIGKILL), so no other process using
//!   this module picks it while this one lives;
//!
//! and it must be bindable when picked (nothing else listens there).

use std::{
    fs::{File, OpenOptions},
    net::TcpListener,
    path::PathBuf,
    sync::Mutex,
};

/// Locks held for the life of the process.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("notify-ports")
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A loopback port reserved for this process (see the module docs). Panics if none of 500
/// candidates could be reserved, which means something is badly wrong with the machine.
pub fn reserve() -> u16 {
    try_reserve().expect("no free loopback port could be reserved")
}

/// [`reserve`], returning an error instead of panicking.
pub fn try_reserve() -> anyhow::Result<u16> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir)?;
    let hi = ephemeral_start().clamp(2_000, 32_768);
    let lo = hi.saturating_sub(12_000).max(1_024);
    let span = u32::from(hi - lo);
    let seed = uuid::Uuid::new_v4().as_u128();
    for i in 0..500u32 {
        let offset = ((seed >> (i % 96)) as u32).wrapping_add(i.wrapping_mul(7_919)) % span;
        let port = lo + offset as u16;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))?;
        if file.try_lock().is_err() {
            continue; // another process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // something outside this scheme listens there; the lock is dropped
        }
        HELD.lock().expect("port locks poisoned").push(file);
        return Ok(port);
    }
    anyhow::bail!("no loopback port below {hi} could be reserved")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..20).map(|_| reserve()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(p < ephemeral_start(), "{p}");
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }

    #[test]
    fn a_reserved_port_is_locked_against_other_processes() {
        let port = reserve();
        // Another open file description of the same lock file cannot take the lock.
        let other = File::open(lock_dir().join(format!("{port}.lock"))).unwrap();
        assert!(other.try_lock().is_err());
    }
}
