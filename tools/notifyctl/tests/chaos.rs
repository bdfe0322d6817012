//! `make chaos`, shortened for CI: the real binaries under open-loop load with every fault
//! injected in turn (each service SIGKILLed, brokers down, Postgres and Redis restarted,
//! providers failing, the Kafka cluster replaced) — and not one accepted notification lost,
//! duplicates at the providers within the number of kills.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use devkit::process::Guarded;

#[test]
fn under_load_and_every_fault_nothing_accepted_is_lost() {
    let dir = std::env::temp_dir().join(format!("notify-chaos-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::fs::File::create(dir.join("output.txt")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_notifyctl"));
    cmd.args([
        "chaos",
        "--rate",
        "30",
        "--duration-secs",
        "40",
        "--failure-percent",
        "30",
        "--settle-secs",
        "150",
    ])
    .arg("--dir")
    .arg(&dir)
    .stdin(Stdio::null())
    .stdout(out.try_clone().unwrap())
    .stderr(out);
    let mut chaos = Guarded::spawn("notifyctl chaos", cmd)
        .unwrap()
        .with_grace(Duration::from_secs(30));
    let status = chaos.wait_timeout(Duration::from_secs(280));
    let output = std::fs::read_to_string(dir.join("output.txt")).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("chaos did not finish in 280 s:\n{output}"));
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("report.json"))
            .unwrap_or_else(|e| panic!("no report ({e}):\n{output}")),
    )
    .unwrap();
    assert!(status.success(), "{status}:\n{output}");
    let n = |k: &str| report[k].as_u64().unwrap();
    assert!(n("accepted") > 500, "{report}");
    assert_eq!(n("lost"), 0, "{output}");
    assert_eq!(n("terminal"), n("accepted"));
    // A provider got a delivery twice only where a worker was killed while sending it.
    assert_eq!(n("duplicates_unexplained"), 0, "{output}");
    assert!(n("duplicates") <= n("in_flight_at_kills"), "{output}");
    assert_eq!(report["faults"].as_array().unwrap().len(), 11, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
