//! `cargo xtask deb`: the Debian package (cargo-deb), with its generated
//! assets (man pages, completions, changelog).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{output, run, say, workspace_root};

pub fn deb() -> Result<()> {
    say("building the release binary for the package");
    run(Command::new("cargo").args(["build", "--release", "-p", "tcpguard", "--bin", "tcpguard"]))?;
    let root = workspace_root();
    let assets = root.join("target/release/deb-assets");
    let _ = std::fs::remove_dir_all(&assets);
    say("generating man pages, shell completions and the packaged config (tcpguard generate)");
    let o = Command::new(root.join("target/release/tcpguard"))
        .arg("generate")
        .arg(&assets)
        .output()
        .context("running tcpguard generate")?;
    if !o.status.success() {
        bail!("tcpguard generate failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    // Man pages gzipped, as Debian ships them (-n: no name or time inside).
    for entry in std::fs::read_dir(assets.join("man")).context("reading the generated man pages")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            run(Command::new("gzip").args(["-9nf"]).arg(&path))?;
        }
    }
    let maintainer = std::env::var("TCPGUARD_DEB_MAINTAINER").ok().filter(|m| !m.trim().is_empty());
    write_changelog(&assets.join("changelog"), maintainer.as_deref())?;
    say("packaging (cargo deb --no-build)");
    let mut cmd = Command::new("cargo");
    cmd.args(["deb", "-p", "tcpguard", "--no-build"]);
    if let Some(m) = &maintainer {
        say(&format!("maintainer: {m} (TCPGUARD_DEB_MAINTAINER)"));
        cmd.args(["--maintainer", m]);
    }
    let o = cmd.stderr(std::process::Stdio::inherit()).output().context("running cargo deb")?;
    if !o.status.success() {
        bail!("cargo deb failed");
    }
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().lines().last().unwrap_or_default());
    if !path.exists() {
        bail!("cargo deb did not name the package it wrote (stdout: {})", String::from_utf8_lossy(&o.stdout));
    }
    say(&format!("wrote {}", path.display()));
    Ok(())
}

/// The first `key = "value"` line of a manifest (relative to the workspace).
fn manifest_string(manifest: &str, key: &str) -> Result<String> {
    let text = std::fs::read_to_string(workspace_root().join(manifest))?;
    let prefix = format!("{key} = \"");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.strip_suffix('"')))
        .map(str::to_string)
        .with_context(|| format!("no {key} in {manifest}"))
}

/// The Debian changelog of this build: one entry for the workspace version,
/// dated by the last commit (reproducible), signed by the package's
/// maintainer (`maintainer`, else the one in tcpguard/Cargo.toml).
fn write_changelog(path: &Path, maintainer: Option<&str>) -> Result<()> {
    let version = manifest_string("Cargo.toml", "version")?;
    let default_maintainer = manifest_string("tcpguard/Cargo.toml", "maintainer")?;
    let date = output(Command::new("git").args(["log", "-1", "--format=%cD"]))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .or_else(|| output(Command::new("date").arg("-R")).map(|d| d.trim().to_string()))
        .context("no date for the changelog")?;
    let text = format!(
        "tcpguard ({version}-1) unstable; urgency=medium\n\n  * tcpguard {version}: see /usr/share/doc/tcpguard/README.md.\n\n -- {}  {date}\n",
        maintainer.unwrap_or(&default_maintainer)
    );
    std::fs::write(path, text)?;
    Ok(())
}
