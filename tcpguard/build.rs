//! Builds the eBPF object (tcpguard-ebpf) with the nightly toolchain and
//! bpf-linker, so that `src/loader.rs` can embed it.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let meta = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    let text = String::from_utf8(meta.stdout).context("cargo metadata output is not UTF-8")?;
    // Find tcpguard-ebpf's manifest directory without pulling in a JSON parser.
    let needle = "/tcpguard-ebpf/Cargo.toml";
    let end = text.find(needle).ok_or_else(|| anyhow!("tcpguard-ebpf not in workspace metadata"))?;
    let start = text[..end].rfind('"').ok_or_else(|| anyhow!("bad cargo metadata"))? + 1;
    let root_dir = format!("{}/tcpguard-ebpf", &text[start..end]);
    aya_build::build_ebpf(
        [Package { name: "tcpguard-ebpf", root_dir: &root_dir, ..Default::default() }],
        Toolchain::default(),
    )
}
