//! Compiles `proto/` with protox (a protobuf compiler in Rust), so that building pos-hub
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/pos/v1/events.proto",
        "proto/pos/v1/hub.proto",
        "proto/pos/v1/peer.proto",
        "proto/etcd/kv.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    // The encoded descriptors serve gRPC server reflection on the client port, so stock
    // tools can list the API; the peer service is not served there, so it is left out.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut client_port = descriptors.clone();
    client_port
        .file
        .retain(|file| file.name() != "pos/v1/peer.proto" && file.name() != "etcd/kv.proto");
    std::fs::write(
        out_dir.join("pos_descriptor.bin"),
        prost::Message::encode_to_vec(&client_port),
    )?;
    // etcd's calls are for the bench's comparison: a client only.
    let (etcd, ours): (Vec<_>, Vec<_>) = descriptors
        .file
        .iter()
        .cloned()
        .partition(|file| file.name() == "etcd/kv.proto");
    let mut etcd_set = descriptors.clone();
    etcd_set.file = etcd.into_iter().collect();
    let mut ours_set = descriptors;
    ours_set.file = ours;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(ours_set)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(etcd_set)?;
    Ok(())
}
