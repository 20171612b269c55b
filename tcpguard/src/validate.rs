//! Inputs that parse but may mean nothing, judged in one place for the
//! command line, control requests and the config, so the three cannot
//! drift. Each refusal says why and what to write instead. (A prefix that
//! no packet can match, an IPv4-mapped IPv6 one, is refused where every
//! prefix is parsed: `net::Prefix::from_str`.)

use crate::net::Prefix;

/// The longest block a TTL may ask for (365 days): longer is an operator's
/// typo, not a plan; a permanent block has no TTL at all.
pub const MAX_TTL_SECS: u64 = 365 * 86_400;

/// The widest prefixes a block or an allow-list entry may cover without
/// `--force` (or, in the config, `datapath.wide-entries = true`):
/// `policy.widest-block-v4` and `policy.widest-block-v6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widest {
    pub v4: u8,
    pub v6: u8,
}

impl Widest {
    fn of(self, p: &Prefix) -> (u8, &'static str) {
        if p.addr.is_ipv4() {
            (self.v4, "policy.widest-block-v4")
        } else {
            (self.v6, "policy.widest-block-v6")
        }
    }
}

/// A block of `p`: refused when wider than the limit, unless forced.
pub fn block(p: &Prefix, widest: Widest, force: bool) -> Result<(), String> {
    let (w, key) = widest.of(p);
    if p.len < w && !force {
        return Err(format!(
            "refusing to block {p}: wider than /{w} ({key}), it would cut off every client in it that is not \
             allow-listed (SSH included); pass --force if you mean it"
        ));
    }
    Ok(())
}

/// An allow-list entry for `p`: refused when wider than the limit, unless
/// forced (everything in it would pass unjudged, floods included).
pub fn allow(p: &Prefix, widest: Widest, force: bool) -> Result<(), String> {
    let (w, key) = widest.of(p);
    if p.len < w && !force {
        return Err(format!(
            "refusing to allow-list {p}: wider than /{w} ({key}), every source in it would pass unjudged, a \
             flood from it too; pass --force if you mean it"
        ));
    }
    Ok(())
}

/// A block TTL: `None` blocks until unblocked; 0 would expire at once.
pub fn ttl(ttl: Option<u64>) -> Result<(), String> {
    match ttl {
        Some(0) => Err("a block TTL of 0 s would expire at once; omit the TTL for a block until unblocked".into()),
        Some(t) if t > MAX_TTL_SECS => {
            Err(format!("a block TTL is at most {MAX_TTL_SECS} s (365d); omit the TTL for a block until unblocked"))
        }
        _ => Ok(()),
    }
}

/// The control socket's file mode: the owner reads and writes it, and no
/// other user may (connecting to a socket takes write permission, and a
/// client may block, unblock and allow).
pub fn socket_mode(mode: u32) -> Result<(), String> {
    if mode > 0o777 || mode & 0o600 != 0o600 {
        return Err(format!("{mode:04o} must be an octal mode like \"0660\" that lets the owner read and write"));
    }
    if mode & 0o002 != 0 {
        return Err(format!(
            "{mode:04o} lets every local user write to the socket (block, unblock and allow included); use \"0660\" \
             and control.group for the operators"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Widest = Widest { v4: 16, v6: 48 };

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn wide_blocks_and_allows_need_force() {
        for (s, ok) in [("0.0.0.0/0", false), ("10.0.0.0/8", false), ("10.1.0.0/16", true), ("::/0", false)] {
            assert_eq!(block(&p(s), W, false).is_ok(), ok, "{s}");
            assert_eq!(allow(&p(s), W, false).is_ok(), ok, "{s}");
            assert!(block(&p(s), W, true).is_ok() && allow(&p(s), W, true).is_ok(), "{s} forced");
        }
        assert!(allow(&p("0.0.0.0/0"), W, false).unwrap_err().contains("--force"));
    }

    #[test]
    fn ttls_and_modes() {
        assert!(ttl(None).is_ok() && ttl(Some(1)).is_ok() && ttl(Some(MAX_TTL_SECS)).is_ok());
        assert!(ttl(Some(0)).unwrap_err().contains("expire at once"));
        assert!(ttl(Some(MAX_TTL_SECS + 1)).is_err());
        assert!(socket_mode(0o660).is_ok() && socket_mode(0o600).is_ok() && socket_mode(0o664).is_ok());
        for bad in [0o777, 0o662, 0o666, 0o066, 0o1777] {
            assert!(socket_mode(bad).is_err(), "{bad:o}");
        }
        assert!(socket_mode(0o777).unwrap_err().contains("every local user"));
    }
}
