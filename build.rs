//! Compiles `proto/` with protox (a protobuf compiler in Rust), so that building pos-hub
//! needs no system `protoc`; and embeds the browser app's build (`web/dist/`, committed),
//! so that building pos-hub needs no node or npm either.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A build failure whose message is printed as it is (`main`'s `Err` is shown with `Debug`).
struct BuildError(String);

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

fn fail(message: String) -> Box<dyn std::error::Error> {
    Box::new(BuildError(message))
}

/// Whether a file name can be its own URL path segment as it is: no percent-encoding, and
/// nothing axum's router reads as a capture (`{…}`, a leading `:` or `*`).
fn url_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-~@+".contains(&b))
}

/// Every file under `dir`, as (URL path, absolute path). Dotfiles (`.gitkeep`, an editor's
/// leftovers) are not part of the app and are left out.
fn web_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| fail(format!("cannot list {}: {err}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|err| fail(format!("cannot list {}: {err}", dir.display())))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(fail(format!(
                "{}: the web app's file names must be UTF-8",
                path.display()
            )));
        };
        if name.starts_with('.') {
            continue;
        }
        if !url_safe(name) {
            return Err(fail(format!(
                "{}: a web app file name may only use letters, digits and . _ - ~ @ +, so that \
                 it is served at its own URL as it is",
                path.display()
            )));
        }
        if path.is_dir() {
            web_files(root, &path, out)?;
        } else {
            let relative = path
                .strip_prefix(root)
                .map_err(|err| fail(err.to_string()))?;
            let url: String = relative
                .components()
                .map(|c| format!("/{}", c.as_os_str().to_string_lossy()))
                .collect();
            out.push((url, path));
        }
    }
    Ok(())
}

/// Writes `$OUT_DIR/web_assets.rs`: `WEB_ASSETS`, every file of `web/dist/` as
/// (URL path, bytes), sorted by path so the binary is the same for the same files.
fn embed_web_app(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=web/dist");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("web/dist");
    if !root.join("index.html").is_file() {
        return Err(fail(format!(
            "{} is missing: every node serves the web app, built into the binary from \
             web/dist/. Build it with `npm --prefix web ci && npm --prefix web run build`.",
            root.join("index.html").display()
        )));
    }
    let mut files = Vec::new();
    web_files(&root, &root, &mut files)?;
    files.sort();
    let mut code = String::from(
        "/// Every file of `web/dist/` as (URL path, contents), sorted by path.\n\
         pub static WEB_ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (url, path) in &files {
        let Some(path) = path.to_str() else {
            return Err(fail(format!("{}: not a UTF-8 path", path.display())));
        };
        writeln!(code, "    ({url:?}, include_bytes!({path:?})),")?;
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("web_assets.rs"), code)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/pos/v1/events.proto",
        "proto/pos/v1/hub.proto",
        "proto/pos/v1/peer.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    // The encoded descriptors serve gRPC server reflection on the client port, so stock
    // tools can list the API; the peer service is not served there, so it is left out.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    embed_web_app(&out_dir)?;
    let mut client_port = descriptors.clone();
    client_port
        .file
        .retain(|file| file.name() != "pos/v1/peer.proto");
    std::fs::write(
        out_dir.join("pos_descriptor.bin"),
        prost::Message::encode_to_vec(&client_port),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Written by hand so that events can be sent as stored (src/proto/subscribe.rs).
        .extern_path(
            ".pos.v1.SubscribeResponse",
            "crate::proto::subscribe::SubscribeResponse",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
