//! Owns the `aya::Ebpf` object: load (with map sizes from the config),
//! attach XDP to an interface (native, falling back to skb), pin maps.

use std::path::{Path, PathBuf};

use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use tcpguard_common::map_names;

/// The XDP object built by build.rs (tcpguard-ebpf), embedded in the binary.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpguard"));

/// Root of tcpguard's pins on bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/tcpguard";

pub const PROGRAM: &str = "tcpguard";
pub const BASELINE_PROGRAM: &str = "xdp_pass";

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("failed to load the eBPF object (is this root, with BPF enabled in the kernel?)")]
    Load(#[source] aya::EbpfError),
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("failed to load XDP program {name} into the kernel (verifier)")]
    Verify { name: &'static str, #[source] source: aya::programs::ProgramError },
    #[error("failed to attach XDP to {iface} in {mode} mode; try --xdp-mode skb")]
    Attach { iface: String, mode: &'static str, #[source] source: aya::programs::ProgramError },
    #[error("failed to create pin directory {path}")]
    PinDir { path: PathBuf, #[source] source: std::io::Error },
}

/// How to attach: `Auto` tries native (driver) mode, then generic (skb).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Skb,
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" | "drv" | "driver" => Ok(Self::Native),
            "skb" | "generic" => Ok(Self::Skb),
            _ => Err(format!("unknown XDP mode {s:?}: expected auto, native or skb")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub half_open_entries: u32,
    pub source_entries: u32,
    /// Pin (or adopt already pinned) maps in this directory.
    pub pin_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            half_open_entries: tcpguard_common::DEFAULT_HALF_OPEN_ENTRIES,
            source_entries: tcpguard_common::DEFAULT_SRC_ENTRIES,
            pin_dir: None,
        }
    }
}

/// The loaded datapath: the eBPF object with both programs verified.
pub struct Datapath {
    pub ebpf: Ebpf,
}

impl Datapath {
    /// Load the embedded object and verify both programs.
    pub fn load(opts: &LoadOptions) -> Result<Self, LoaderError> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::HALF_OPEN, opts.half_open_entries)
            .map_max_entries(map_names::SRC_STATS, opts.source_entries);
        let pins: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|source| LoaderError::PinDir { path: dir.clone(), source })?;
                map_names::ALL.iter().map(|n| (*n, dir.join(n))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(LoaderError::Load)?;
        for name in [PROGRAM, BASELINE_PROGRAM] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(LoaderError::MissingProgram { name })?
                .try_into()
                .map_err(|source| LoaderError::Verify { name, source })?;
            prog.load().map_err(|source| LoaderError::Verify { name, source })?;
        }
        Ok(Datapath { ebpf })
    }

    pub fn program(&self) -> &Xdp {
        self.xdp(PROGRAM)
    }

    pub fn baseline(&self) -> &Xdp {
        self.xdp(BASELINE_PROGRAM)
    }

    fn xdp(&self, name: &str) -> &Xdp {
        // Both programs were checked and loaded in `load`.
        self.ebpf.program(name).and_then(|p| p.try_into().ok()).expect("program loaded")
    }

    /// Attach the tcpguard program to `iface`. Returns the mode used.
    /// The attachment lives as long as this `Datapath` (dropped = detached).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<&'static str, LoaderError> {
        attach_program(&mut self.ebpf, PROGRAM, iface, mode)
    }

    /// Attach the pass-everything program (for a veth peer, or a baseline).
    pub fn attach_baseline(&mut self, iface: &str) -> Result<&'static str, LoaderError> {
        attach_program(&mut self.ebpf, BASELINE_PROGRAM, iface, AttachMode::Auto)
    }
}

fn attach_program(
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
    mode: AttachMode,
) -> Result<&'static str, LoaderError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(LoaderError::MissingProgram { name })?
        .try_into()
        .map_err(|source| LoaderError::Verify { name, source })?;
    let try_mode = |prog: &mut Xdp, m: XdpMode, label: &'static str| {
        prog.attach(iface, m).map(|_| label).map_err(|source| LoaderError::Attach {
            iface: iface.to_string(),
            mode: label,
            source,
        })
    };
    match mode {
        AttachMode::Native => try_mode(prog, XdpMode::Driver, "native"),
        AttachMode::Skb => try_mode(prog, XdpMode::Skb, "skb"),
        AttachMode::Auto => match try_mode(prog, XdpMode::Driver, "native") {
            Ok(m) => Ok(m),
            Err(e) => {
                log::warn!("{e}: {}; falling back to skb (generic) mode", source_chain(&e));
                try_mode(prog, XdpMode::Skb, "skb")
            }
        },
    }
}

/// The pin directory for an interface: /sys/fs/bpf/tcpguard/<iface>.
pub fn pin_dir_for(iface: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(iface)
}

/// "a: b: c" for an error and its sources.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
