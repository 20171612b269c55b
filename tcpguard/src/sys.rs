//! What aya does not wrap: raw bpf(2) link queries, and the bpf filesystem
//! (is a path on one; mount it where systemd would).

use std::path::Path;

/// Whether the bpf_link pinned at `link_pin` is attached to the interface
/// named `iface` now: false when the interface is gone or was re-created, or
/// the link was detached (a defunct link reports interface index 0). Works for
/// XDP and TCX links (both report the interface first).
///
/// # Errors
/// When the pin cannot be opened or the kernel refuses the link's info.
pub fn link_attached_to(link_pin: &Path, iface: &str) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    // BPF_OBJ_GET and BPF_OBJ_GET_INFO_BY_FD, with the parts of union bpf_attr they use.
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        // Explicit: the kernel refuses (EINVAL) an attr whose bytes past the
        // fields it knows are not zero, and padding is not guaranteed zero.
        _pad: u32,
    }
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let path = std::ffi::CString::new(link_pin.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let get = ObjGet { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0, path_fd: 0, _pad: 0 };
    // SAFETY: bpf(2) reads `get` (size given) and the NUL-terminated path it points to.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &raw const get, size_of::<ObjGet>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel just returned, owned here.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then an 8-aligned union whose
    // xdp and tcx members start with the interface index (byte 16). Larger
    // than the kernel's struct is fine while the tail is zero.
    let mut info = [0u8; 256];
    let attr = InfoByFd {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &raw const attr, size_of::<InfoByFd>()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ifindex = u32::from_ne_bytes(info[16..20].try_into().expect("4 bytes"));
    let name = std::ffi::CString::new(iface).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated name.
    let want = unsafe { libc::if_nametoindex(name.as_ptr()) };
    Ok(ifindex != 0 && ifindex == want)
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Make sure `pin_root` lies on a bpf filesystem. Hosts booted by systemd
/// mount one at /sys/fs/bpf; minimal systems may not, and then tcpguard
/// mounts it there itself (as systemd would), saying so. Returns whether it
/// mounted.
pub fn ensure_bpffs(pin_root: &Path) -> Result<bool, crate::loader::LoaderError> {
    let mut probe = pin_root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if is_bpffs(&probe) {
        return Ok(false);
    }
    let mount_err = |msg: String| crate::loader::LoaderError::PinDir {
        path: pin_root.to_path_buf(),
        source: std::io::Error::other(msg),
    };
    if !pin_root.starts_with(BPFFS_MOUNT) {
        return Err(mount_err(format!(
            "{} is not on a bpf filesystem; mount one (mount -t bpf bpf DIR) or use a pin-root under {BPFFS_MOUNT}",
            pin_root.display()
        )));
    }
    log::info!("no bpf filesystem at {BPFFS_MOUNT}: mounting one (mount -t bpf bpf {BPFFS_MOUNT})");
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, dst, fs) = (c("bpf"), c(BPFFS_MOUNT), c("bpf"));
    // SAFETY: valid C strings; mode 0700 as systemd mounts it.
    let data = c("mode=0700");
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, data.as_ptr().cast()) };
    if rc != 0 {
        return Err(mount_err(format!(
            "mounting bpffs at {BPFFS_MOUNT}: {} (mount it on the host: `mount -t bpf bpf {BPFFS_MOUNT}`, as \
             systemd does at boot; the service unit does not grant CAP_SYS_ADMIN, and a mount made inside its \
             private mount namespace would lose the pins at every restart)",
            std::io::Error::last_os_error()
        )));
    }
    Ok(true)
}
