//! Builds the eBPF object (tcpguard-ebpf) with the nightly toolchain and
//! bpf-linker, so that `src/loader.rs` can embed it.
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
    aya_build::build_ebpf(
        [Package { name: "tcpguard-ebpf", root_dir: root_dir.as_str(), ..Default::default() }],
        Toolchain::default(),
    )
}
