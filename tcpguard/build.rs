//! Builds the eBPF object (tcpguard-ebpf) with the nightly toolchain and
//! bpf-linker, so that `src/loader.rs` can embed it, and generates gobgpd's
//! gRPC client (`[upstream]`) from the API definitions of the installed GoBGP
//! (Debian's golang-github-osrg-gobgp-dev) with protoc.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // The workspace as cargo describes it: tcpguard-ebpf's manifest directory.
    let meta = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "tcpguard-ebpf")
        .ok_or_else(|| anyhow!("tcpguard-ebpf is not a member of the workspace"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("{} has no directory", ebpf.manifest_path))?;
    gobgp_client()?;
    aya_build::build_ebpf(
        [Package { name: "tcpguard-ebpf", root_dir: root_dir.as_str(), ..Default::default() }],
        Toolchain::default(),
    )
}

/// Where Debian's golang-github-osrg-gobgp-dev puts GoBGP's API definitions
/// (TCPGUARD_GOBGP_API overrides it).
const GOBGP_API: &str = "/usr/share/gocode/src/github.com/osrg/gobgp/api";

/// gobgpd's gRPC client (package `apipb`), generated into OUT_DIR; never
/// checked in.
fn gobgp_client() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TCPGUARD_GOBGP_API");
    let dir = std::env::var("TCPGUARD_GOBGP_API").unwrap_or_else(|_| GOBGP_API.to_string());
    let protos: Vec<String> =
        ["gobgp.proto", "attribute.proto", "capability.proto"].iter().map(|f| format!("{dir}/{f}")).collect();
    if let Some(missing) = protos.iter().find(|p| !std::path::Path::new(p).exists()) {
        return Err(anyhow!(
            "{missing} not found: tcpguard generates gobgpd's client ([upstream]) from GoBGP's API definitions \
             (apt-get install golang-github-osrg-gobgp-dev protobuf-compiler; `cargo xtask prereqs` does)"
        ));
    }
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // google/protobuf/*.proto come with protobuf-compiler (libprotobuf-dev's
    // include directory).
    tonic_build::configure()
        .build_server(false)
        .compile_protos(&protos, &[dir, "/usr/include".to_string()])
        .context("generating gobgpd's gRPC client (protoc from protobuf-compiler)")
}
