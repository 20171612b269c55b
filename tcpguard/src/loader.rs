//! Owns the `aya::Ebpf` object: load the product's programs (with map
//! sizes from the config), attach XDP to an interface (native, falling back
//! to skb) and the TC egress program, pin and adopt links and maps. Raw
//! bpf(2) queries and the bpf filesystem are in `sys`.

use std::path::{Path, PathBuf};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
        LinkOrder, RawTracePoint, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use tcpguard_common::map_names;

/// The XDP object built by build.rs (tcpguard-ebpf), embedded in the binary.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpguard"));

/// The pinned TC egress link, beside the XDP link in an interface's pin
/// directory.
pub const EGRESS_LINK: &str = "egress-link";

/// Root of tcpguard's pins on bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/tcpguard";

pub const PROGRAM: &str = "tcpguard";
/// The TC egress program: the server's SYN-ACKs and RSTs.
pub const EGRESS_PROGRAM: &str = "tcpguard_egress";
/// The transmit watch's raw tracepoint program.
pub const TX_EXCEPTION_PROGRAM: &str = "tcpguard_tx_exception";

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("failed to load the eBPF object (is this root, with BPF enabled in the kernel?)")]
    Load(#[source] aya::EbpfError),
    #[error("failed to rewrite the allow- and block-lists' first-byte summaries from the lists")]
    Summaries(#[source] crate::maps::MapsError),
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("failed to load XDP program {name} into the kernel (verifier)")]
    Verify {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("failed to attach XDP to {iface} in {mode} mode; try --xdp-mode skb")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("failed to attach the TC egress program to {iface} (TCX, kernel 6.6 or later)")]
    AttachEgress {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("failed to attach the transmit watch to the raw tracepoint {tracepoint}")]
    AttachTracepoint {
        tracepoint: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("failed to create pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to pin the XDP link at {path}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Remove pinned maps whose layout (type, key or value size) is not the one
/// this build defines: left by another tcpguard version, they cannot be
/// adopted (the verifier would refuse the program against them). Each is
/// named in the log; its state (counters, tables) starts afresh, while
/// compatible maps (the block- and allow-lists among them) are kept.
/// Returns the names removed.
pub fn retire_stale_pins(pins: &[(&'static str, PathBuf)]) -> Vec<&'static str> {
    let obj = match aya_obj::Object::parse(OBJECT) {
        Ok(o) => o,
        Err(e) => {
            log::warn!("cannot read the embedded object's map definitions ({e}); pinned maps adopted unchecked");
            return Vec::new();
        }
    };
    let mut retired = Vec::new();
    for (name, path) in pins {
        let (Some(want), Ok(have)) = (obj.maps.get(*name), aya::maps::MapInfo::from_pin(path)) else { continue };
        let have_type = have.map_type().map_or(u32::MAX, |t| t as u32);
        let have_layout = (have_type, have.key_size(), have.value_size());
        let want_layout = (want.map_type(), want.key_size(), want.value_size());
        if have_layout == want_layout {
            continue;
        }
        log::warn!(
            "pinned map {} has another layout (type {}, key {} B, value {} B; this build: type {}, key {} B, \
             value {} B), left by another tcpguard version: replaced, its state starts afresh",
            path.display(),
            have_layout.0,
            have_layout.1,
            have_layout.2,
            want_layout.0,
            want_layout.1,
            want_layout.2
        );
        match std::fs::remove_file(path) {
            Ok(()) => retired.push(*name),
            Err(e) => log::error!("removing {}: {e}", path.display()),
        }
    }
    retired
}

/// How an interface came to be protected, and where its link is pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub how: crate::model::Attach,
    pub link_pin: PathBuf,
}

pub use crate::model::AttachMode;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub half_open_entries: u32,
    pub source_entries: u32,
    pub block_list_entries: u32,
    /// Pin (or adopt already pinned) maps in this directory.
    pub pin_dir: Option<PathBuf>,
    /// Replace pinned maps whose layout is not this build's (the default);
    /// false adopts pins as they are (a test substituting a map on purpose).
    pub retire_stale: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            half_open_entries: tcpguard_common::DEFAULT_HALF_OPEN_ENTRIES,
            source_entries: tcpguard_common::DEFAULT_SRC_ENTRIES,
            block_list_entries: tcpguard_common::LIST_ENTRIES,
            pin_dir: None,
            retire_stale: true,
        }
    }
}

/// The loaded datapath: the eBPF object with both programs verified.
pub struct Datapath {
    pub ebpf: Ebpf,
    /// The pinned XDP link, when attached with [`Datapath::attach_pinned`].
    link: Option<PinnedLink>,
    /// The pinned TC egress link.
    egress_link: Option<PinnedLink>,
}

impl Datapath {
    /// Load the embedded object and verify both programs.
    pub fn load(opts: &LoadOptions) -> Result<Self, LoaderError> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::HALF_OPEN, opts.half_open_entries)
            .map_max_entries(map_names::SRC_STATS, opts.source_entries)
            .map_max_entries(map_names::BLOCK_V4, opts.block_list_entries)
            .map_max_entries(map_names::BLOCK_V6, opts.block_list_entries);
        let pins: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                crate::sys::ensure_bpffs(dir)?;
                std::fs::create_dir_all(dir).map_err(|source| LoaderError::PinDir { path: dir.clone(), source })?;
                map_names::ALL.iter().map(|n| (*n, dir.join(n))).collect()
            }
            None => Vec::new(),
        };
        if opts.retire_stale {
            retire_stale_pins(&pins);
        }
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(LoaderError::Load)?;
        // The product's programs only (the object's pass-everything
        // baselines are the lab's: `lab::baselines`).
        let name = PROGRAM;
        program_mut::<Xdp>(&mut ebpf, name)?.load().map_err(|source| LoaderError::Verify { name, source })?;
        let name = EGRESS_PROGRAM;
        program_mut::<SchedClassifier>(&mut ebpf, name)?
            .load()
            .map_err(|source| LoaderError::Verify { name, source })?;
        // The lists' first-byte summaries made from the lists themselves:
        // adopted pins may hold entries an older build added without them
        // (its program never read them), and a fresh map reads as unknown.
        crate::maps::Maps::new(&mut ebpf).sync_first_bytes().map_err(LoaderError::Summaries)?;
        Ok(Datapath { ebpf, link: None, egress_link: None })
    }

    pub fn program(&self) -> &Xdp {
        self.xdp(PROGRAM)
    }

    /// The TC egress program.
    pub fn egress(&self) -> &SchedClassifier {
        self.classifier(EGRESS_PROGRAM)
    }

    fn classifier(&self, name: &str) -> &SchedClassifier {
        // Checked and loaded in `load`.
        self.ebpf.program(name).and_then(|p| p.try_into().ok()).expect("program loaded")
    }

    fn egress_mut(&mut self) -> Result<&mut SchedClassifier, LoaderError> {
        program_mut(&mut self.ebpf, EGRESS_PROGRAM)
    }

    /// Attach the egress program to `iface` for as long as this `Datapath`
    /// lives (labs, `watch`).
    pub fn attach_egress(&mut self, iface: &str) -> Result<(), LoaderError> {
        let err = |source| LoaderError::AttachEgress { iface: iface.to_string(), source };
        self.egress_mut()?
            .attach_with_options(iface, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(err)?;
        Ok(())
    }

    /// Attach the egress program through a pinned TCX link at `link_pin`,
    /// adopting the one a previous run left (the program swapped in
    /// atomically), as [`Datapath::attach_pinned`] does for XDP.
    pub fn attach_egress_pinned(&mut self, iface: &str, link_pin: &Path) -> Result<bool, LoaderError> {
        let err = |source| LoaderError::AttachEgress { iface: iface.to_string(), source };
        let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| LoaderError::PinLink {
            path: link_pin.to_path_buf(),
            source,
        };
        if link_pin.exists() {
            let adopted = PinnedLink::from_pin(link_pin)
                .map_err(|e| e.to_string())
                .and_then(|p| SchedClassifierLink::try_from(FdLink::from(p)).map_err(|e| e.to_string()))
                .and_then(|l| {
                    self.egress_mut().map_err(|e| e.to_string())?.attach_to_link(l).map_err(|e| e.to_string())
                });
            match adopted {
                Ok(id) => {
                    let link = self.egress_mut()?.take_link(id).map_err(|e| pin_err(Box::new(e)))?;
                    drop(link);
                    self.egress_link = Some(PinnedLink::from_pin(link_pin).map_err(|e| pin_err(Box::new(e)))?);
                    return Ok(true);
                }
                Err(e) => {
                    log::warn!("cannot adopt the pinned egress link {}: {e}; attaching anew", link_pin.display());
                    let _ = std::fs::remove_file(link_pin);
                }
            }
        }
        let prog = self.egress_mut()?;
        let id = prog
            .attach_with_options(iface, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(err)?;
        let link = prog.take_link(id).map_err(|e| pin_err(Box::new(e)))?;
        let fd = FdLink::try_from(link).map_err(|e| pin_err(Box::new(e)))?;
        self.egress_link = Some(fd.pin(link_pin).map_err(|e| pin_err(Box::new(e)))?);
        Ok(false)
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

    /// Attach through a pinned bpf_link at `link_pin`: adopt the link a
    /// previous run left (atomically swapping in this program, maps
    /// unchanged), or attach anew and pin the link. The pinned link keeps XDP
    /// attached if this process dies; [`Datapath::release`] decides on exit.
    pub fn attach_pinned(&mut self, iface: &str, mode: AttachMode, link_pin: &Path) -> Result<Attachment, LoaderError> {
        if link_pin.exists() {
            match self.adopt(link_pin) {
                Ok(()) => {
                    return Ok(Attachment { how: crate::model::Attach::Adopted, link_pin: link_pin.to_path_buf() })
                }
                Err(e) => {
                    log::warn!("cannot adopt the pinned link {}: {e}; attaching anew", link_pin.display());
                    let _ = std::fs::remove_file(link_pin);
                }
            }
        }
        let prog: &mut Xdp = program_mut(&mut self.ebpf, PROGRAM)?;
        let used = attach_mode(prog, iface, mode)?;
        let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| LoaderError::PinLink {
            path: link_pin.to_path_buf(),
            source,
        };
        let (id, prog) = (used.1, prog);
        let link = prog.take_link(id).map_err(|e| pin_err(Box::new(e)))?;
        let fd = FdLink::try_from(link).map_err(|e| pin_err(Box::new(e)))?;
        let pinned = fd.pin(link_pin).map_err(|e| pin_err(Box::new(e)))?;
        self.link = Some(pinned);
        let how = if used.0 == "native" { crate::model::Attach::Native } else { crate::model::Attach::Skb };
        Ok(Attachment { how, link_pin: link_pin.to_path_buf() })
    }

    fn adopt(&mut self, link_pin: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let pinned = PinnedLink::from_pin(link_pin)?;
        let xdp_link = XdpLink::try_from(FdLink::from(pinned))?;
        let prog: &mut Xdp = self.ebpf.program_mut(PROGRAM).ok_or("program missing")?.try_into()?;
        prog.attach_to_link(xdp_link)?;
        Ok(())
    }

    /// On exit: `stay` keeps the pinned link (XDP stays attached and the next
    /// start adopts it); otherwise the pin is removed and XDP detaches when
    /// this `Datapath` is dropped. Maps stay pinned either way.
    pub fn release(&mut self, link_pin: &Path, stay: bool) {
        if !stay {
            if let Err(e) = std::fs::remove_file(link_pin) {
                log::warn!("removing {}: {e}", link_pin.display());
            }
            if let Some(dir) = link_pin.parent() {
                let egress = dir.join(EGRESS_LINK);
                if egress.exists() {
                    if let Err(e) = std::fs::remove_file(&egress) {
                        log::warn!("removing {}: {e}", egress.display());
                    }
                }
            }
        }
        self.link = None;
        self.egress_link = None;
    }

    /// Attach the transmit watch: a raw tracepoint on `xdp:xdp_exception`
    /// that counts this datapath's XDP_TX replies the driver failed to send
    /// (veth's failures are the daemon's to read: see `tcpguard_tx_exception`).
    /// Detached when this object is dropped (the next daemon attaches its
    /// own); no tracefs and no perf events needed.
    pub fn attach_tx_watch(&mut self) -> Result<(), LoaderError> {
        let (name, tp) = (TX_EXCEPTION_PROGRAM, "xdp_exception");
        let prog: &mut RawTracePoint = program_mut(&mut self.ebpf, name)?;
        prog.load().map_err(|source| LoaderError::Verify { name, source })?;
        prog.attach(tp).map_err(|source| LoaderError::AttachTracepoint { tracepoint: tp, source })?;
        Ok(())
    }
}

fn attach_program(
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
    mode: AttachMode,
) -> Result<&'static str, LoaderError> {
    attach_mode(program_mut::<Xdp>(ebpf, name)?, iface, mode).map(|(label, _)| label)
}

/// The program `name` of the object, as its type (`Xdp`, `SchedClassifier`,
/// `RawTracePoint`): missing, or of another type, is an error naming it.
pub fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoaderError>
where
    &'a mut aya::programs::Program: TryInto<&'a mut T, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoaderError::MissingProgram { name })?
        .try_into()
        .map_err(|source| LoaderError::Verify { name, source })
}

/// Attach `prog` to `iface` in `mode` (auto: driver mode, else generic).
/// Returns the mode used and the link.
///
/// # Errors
/// The kernel refused every mode tried.
pub fn attach_mode(
    prog: &mut Xdp,
    iface: &str,
    mode: AttachMode,
) -> Result<(&'static str, aya::programs::xdp::XdpLinkId), LoaderError> {
    let try_mode = |prog: &mut Xdp, m: XdpMode, label: &'static str| {
        prog.attach(iface, m).map(|id| (label, id)).map_err(|source| LoaderError::Attach {
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
