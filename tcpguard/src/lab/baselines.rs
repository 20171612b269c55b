//! The pass-everything programs of the eBPF object (`xdp_pass`, `tc_pass`):
//! the baselines the per-packet benchmark measures against, and the XDP
//! program a lab puts on a veth peer so that veth delivers the server's
//! XDP_TX frames. The daemon's loader never loads them.

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
        let name = XDP_PASS;
        program_mut::<Xdp>(&mut ebpf, name)?.load().map_err(|source| LoaderError::Verify { name, source })?;
        let name = TC_PASS;
        program_mut::<SchedClassifier>(&mut ebpf, name)?
            .load()
            .map_err(|source| LoaderError::Verify { name, source })?;
        Ok(Baselines { ebpf })
    }

    /// The XDP baseline.
    pub fn xdp(&self) -> &Xdp {
        self.ebpf.program(XDP_PASS).and_then(|p| p.try_into().ok()).expect("loaded in Baselines::load")
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
        attach_mode(self.xdp_mut()?, iface, AttachMode::Auto).map(|(_, id)| id)
    }

    /// Detach a link made by [`Baselines::attach_xdp`].
    pub fn detach_xdp(&mut self, id: XdpLinkId) -> Result<(), LoaderError> {
        let name = XDP_PASS;
        self.xdp_mut()?.detach(id).map_err(|source| LoaderError::Verify { name, source })
    }
}
