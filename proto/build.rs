//! Compiles `notify/v1/notify.proto` with protox (a protobuf compiler in Rust: no `protoc` on
//! the machine) into the server and client code, and writes the file descriptor set that
//! the server's reflection service answers with.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "notify/v1/notify.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("notify_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
