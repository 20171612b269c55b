//! The pass-everything programs of the eBPF object (`xdp_pass`, `tc_pass`):
//! the baselines the per-packet benchmark measures against, and the XDP
//! program a lab puts on a veth peer so that veth delivers the server's
//! XDP_TX frames. And the bare responder (`xdp_bare_responder`), the
//! floor of answering a SYN from XDP that `bench syn` measures live. The
//! daemon's loader never loads them.

use aya::{
    programs::{xdp::XdpLinkId, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use tcpguard_common::map_names;

use crate::loader::{attach_mode, program_mut, AttachMode, LoaderError, OBJECT};

/// The XDP baseline's name in the object.
pub const XDP_PASS: &str = "xdp_pass";
/// The TC baseline's name in the object.
pub const TC_PASS: &str = "tc_pass";
/// The bare responder's name in the object.
pub const XDP_BARE: &str = "xdp_bare_responder";
/// xdp-filter's per-packet statistics record alone.
pub const XDP_STATS: &str = "xdp_stats_record";

/// Both baselines, loaded and verified (their own copy of the object, with
/// small maps they never touch).
pub struct Baselines {
    ebpf: Ebpf,
}

impl Baselines {
    pub fn load() -> Result<Self, LoaderError> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(map_names::HALF_OPEN, 1024).map_max_entries(map_names::SRC_STATS, 1024);
        let mut ebpf = loader.load(OBJECT).map_err(LoaderError::Load)?;
        for name in [XDP_PASS, XDP_BARE, XDP_STATS] {
            program_mut::<Xdp>(&mut ebpf, name)?.load().map_err(|source| LoaderError::Verify { name, source })?;
        }
        let name = TC_PASS;
        program_mut::<SchedClassifier>(&mut ebpf, name)?
            .load()
            .map_err(|source| LoaderError::Verify { name, source })?;
        Ok(Baselines { ebpf })
    }

    /// The XDP baseline.
    pub fn xdp(&self) -> &Xdp {
        self.xdp_named(XDP_PASS)
    }

    /// One of the XDP programs ([`XDP_PASS`], [`XDP_BARE`], [`XDP_STATS`]).
    pub fn xdp_named(&self, name: &str) -> &Xdp {
        self.ebpf.program(name).and_then(|p| p.try_into().ok()).expect("loaded in Baselines::load")
    }

    /// The TC baseline.
    pub fn tc(&self) -> &SchedClassifier {
        self.ebpf.program(TC_PASS).and_then(|p| p.try_into().ok()).expect("loaded in Baselines::load")
    }

    fn xdp_mut(&mut self) -> Result<&mut Xdp, LoaderError> {
        program_mut(&mut self.ebpf, XDP_PASS)
    }

    /// Attach the XDP baseline to `iface` (driver mode, else generic),
    /// keeping the link to detach it later.
    pub fn attach_xdp(&mut self, iface: &str) -> Result<XdpLinkId, LoaderError> {
        self.attach_named(XDP_PASS, iface)
    }

    /// Attach the XDP program `name` to `iface`, as [`Baselines::attach_xdp`].
    pub fn attach_named(&mut self, name: &'static str, iface: &str) -> Result<XdpLinkId, LoaderError> {
        attach_mode(program_mut(&mut self.ebpf, name)?, iface, AttachMode::Auto).map(|(_, id)| id)
    }

    /// Detach a link made by [`Baselines::attach_xdp`].
    pub fn detach_xdp(&mut self, id: XdpLinkId) -> Result<(), LoaderError> {
        let name = XDP_PASS;
        self.xdp_mut()?.detach(id).map_err(|source| LoaderError::Verify { name, source })
    }
}
