//! Compiles the bench's client of etcd's two calls (`proto/etcd/kv.proto`) with protox (a
//! protobuf compiler in Rust), so that building the bench needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/etcd/kv.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // etcd's calls are for the bench's comparison: a client only.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
