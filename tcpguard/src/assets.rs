//! What the Debian package ships besides the binary, generated from the
//! command-line definitions so they cannot drift from it: one man page per
//! command (`tcpguard(1)`, `tcpguard-status(1)`, ...), bash, zsh and fish
//! completions, and the packaged config (the embedded default with the
//! control socket's group set to the package's `tcpguard` group).

use std::{
    io,
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// The group the package creates; members may use the control socket.
pub const PACKAGE_GROUP: &str = "tcpguard";

/// The config the package installs as /etc/tcpguard/tcpguard.toml.
///
/// # Panics
/// If the embedded default no longer has the `group = ""` line this edits.
#[must_use]
pub fn packaged_config() -> String {
    let line = "group = \"\"\n";
    assert!(crate::config::DEFAULT_TOML.contains(line), "the default config lost its control.group line");
    crate::config::DEFAULT_TOML.replacen(
        line,
        &format!("group = \"{PACKAGE_GROUP}\"  # created by the Debian package\n"),
        1,
    )
}

/// Write everything under `out`: `man/*.1`, `completions/{tcpguard.bash,_tcpguard,tcpguard.fish}`,
/// `tcpguard.toml`. Returns the files written.
///
/// # Errors
/// When a directory or file cannot be written.
pub fn write_all(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    // One page per visible command, named by its display name (tcpguard-config-check.1).
    clap_mangen::generate_to(Cli::command(), &man)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)?.map(|e| e.map(|e| e.path())).collect::<io::Result<_>>()?;
    pages.sort();
    written.extend(pages);

    let comp = out.join("completions");
    std::fs::create_dir_all(&comp)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        let path = clap_complete::generate_to(shell, &mut cmd, "tcpguard", &comp)?;
        written.push(path);
    }
    let cfg = out.join("tcpguard.toml");
    std::fs::write(&cfg, packaged_config())?;
    written.push(cfg);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaged_config_differs_from_the_default_only_in_the_group_and_parses() {
        let p = packaged_config();
        let cfg = crate::config::Config::parse(&p, "packaged.toml").unwrap();
        assert_eq!(cfg.control.group, PACKAGE_GROUP);
        let changed: Vec<_> = p.lines().zip(crate::config::DEFAULT_TOML.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(p.lines().count(), crate::config::DEFAULT_TOML.lines().count());
    }

    #[test]
    fn man_pages_and_completions_cover_every_command() {
        let dir = std::env::temp_dir().join(format!("tcpguard-assets-{}", std::process::id()));
        let files = write_all(&dir).unwrap();
        let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in ["tcpguard.1", "tcpguard-status.1", "tcpguard-config-check.1", "tcpguard-run.1"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "hidden command got a page: {names:?}");
        let page = std::fs::read_to_string(dir.join("man/tcpguard-status.1")).unwrap();
        assert!(page.contains(".TH") && page.contains("\\-\\-json"), "{page}");
        let bash = std::fs::read_to_string(dir.join("completions/tcpguard.bash")).unwrap();
        assert!(bash.contains("unblock") && bash.contains("--config"), "bash completion lacks commands");
        assert!(dir.join("completions/_tcpguard").exists() && dir.join("completions/tcpguard.fish").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
