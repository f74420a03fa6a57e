//! Compiles the agent protocol (proto/netpath/agent/v1/agent.proto) and the subset of the
//! Kubernetes CRI the agent asks container runtimes (proto/cri/v1/api.proto) with protox, a
//! protobuf compiler in Rust: building netpath needs no system `protoc`.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("manifest dir")?)
        .join("../proto");
    let files = [
        root.join("netpath/agent/v1/agent.proto"),
        root.join("cri/v1/api.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
