//! Global counters: one `Counters` value per CPU in a per-CPU array, so the
//! datapath increments without atomics and userspace sums the CPUs.

/// What a counter counts, declared with it: the metrics exporter groups
/// counters by category rather than by their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// A packet passed without tracking, for this reason.
    Pass,
    /// A packet dropped, for this reason.
    Drop,
    /// Monitor mode: a packet that would have been dropped or answered.
    Monitor,
    /// Anything else the datapath saw or did.
    Event,
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident => $label:literal : $cat:ident,)*) => {
        /// Index of a global counter.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $($(#[doc = $doc])* $name,)* }

        impl Counter {
            pub const ALL: [Counter; COUNTER_COUNT] = [$(Counter::$name,)*];
            /// Stable snake_case name, used in metrics labels and status.
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$name => $label,)* }
            }
            pub const fn category(self) -> Category {
                match self { $(Counter::$name => Category::$cat,)* }
            }
        }

        pub const COUNTER_COUNT: usize = [$($label,)*].len();
    };
}

counters! {
    /// Every packet the program saw.
    Packets => "packets": Event,
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    PassNonIp => "pass_non_ip": Pass,
    /// IP but not TCP.
    PassNonTcp => "pass_non_tcp": Pass,
    /// A non-first IP fragment (no TCP header to read).
    PassFragment => "pass_fragment": Pass,
    /// Ethernet or VLAN header cut short.
    PassTruncatedEth => "pass_truncated_eth": Pass,
    /// IPv4/IPv6 header cut short, or a wrong IP version.
    PassTruncatedIp => "pass_truncated_ip": Pass,
    /// TCP header (or its options) cut short.
    PassTruncatedTcp => "pass_truncated_tcp": Pass,
    /// IPv4 IHL < 5.
    PassBadIhl => "pass_bad_ihl": Pass,
    /// TCP data offset < 5.
    PassBadDoff => "pass_bad_doff": Pass,
    /// More IPv6 extension headers than the bounded walk follows.
    PassIpv6ExtLimit => "pass_ipv6_ext_limit": Pass,
    /// TCP to a port that is not protected.
    PassUnprotectedPort => "pass_unprotected_port": Pass,
    /// TCP to a protected port, passed (after tracking).
    PassTcp => "pass_tcp": Pass,
    /// Dropped: a SYN from a source in the block-list.
    DropBlocked => "drop_blocked": Drop,
    /// Dropped: any other TCP packet (ACK, data, FIN, RST) from a source in
    /// the block-list; not counted as SYNs.
    DropBlockedOther => "drop_blocked_other": Drop,
    /// Dropped: the source exceeded its SYN rate.
    DropRateLimited => "drop_rate_limited": Drop,
    /// Monitor mode: would have been dropped as blocked.
    MonitorBlocked => "monitor_blocked": Monitor,
    /// Monitor mode: would have been dropped by the rate limit.
    MonitorRateLimited => "monitor_rate_limited": Monitor,
    /// A rule wanted the packet dropped and the allow-list overrode it (the
    /// packet went on as if no rule had matched).
    AllowOverride => "allow_override": Event,
    /// Source matched a block entry whose time has run out.
    BlockExpired => "block_expired": Event,
    /// Client SYNs (SYN without ACK) to protected ports.
    Syn => "syn": Event,
    /// SYNs repeating the ISN of an open half-open entry.
    SynRetransmit => "syn_retransmit": Event,
    /// Inbound SYN+ACK (this host is the client).
    SynAckIn => "synack_in": Event,
    /// Final ACKs with seq = ISN + 1 and ack = server ISN + 1.
    HandshakeCompleted => "handshake_completed": Event,
    /// Completions that came after the half-open timeout.
    HandshakeCompletedLate => "handshake_completed_late": Event,
    /// ACKs for a half-open 4-tuple with the wrong seq.
    AckBadSeq => "ack_bad_seq": Event,
    /// RST packets.
    Rst => "rst": Event,
    /// RSTs that removed a half-open entry.
    RstHalfOpen => "rst_half_open": Event,
    /// FIN packets.
    Fin => "fin": Event,
    /// Client SYNs entered in the half-open table (awaiting the server).
    SynTracked => "syn_tracked": Event,
    /// Half-open handshakes: the server's first SYN-ACK for a tracked SYN
    /// went out (TC egress).
    HalfOpenOpened => "half_open_opened": Event,
    /// SYN-ACKs the server sent (TC egress), tracked or not.
    SynAckOut => "synack_out": Event,
    /// SYN-ACKs repeating the server's ISN for a handshake already answered.
    SynAckRetransmit => "synack_retransmit": Event,
    /// Tracked SYNs the server answered with an RST (no listener on the
    /// port): refused, never half-open, not counted as SYN-flood SYNs.
    SynRefused => "syn_refused": Event,
    /// ACKs with the right seq that do not acknowledge the server's SYN-ACK.
    AckBadAck => "ack_bad_ack": Event,
    /// ACKs for a tracked SYN the server never answered.
    AckUnanswered => "ack_unanswered": Event,
    /// A SYN with a new ISN replaced an open entry (the old one failed).
    HalfOpenReplaced => "half_open_replaced": Event,
    /// Sources entered into the source table (never seen, or evicted since):
    /// the daemon's distinct-new-source estimate.
    NewSource => "new_source": Event,
    /// Heavy-source reports sent to the daemon.
    HeavyEvent => "heavy_event": Event,
    /// Heavy-aggregate (/24, /64) reports sent to the daemon.
    HeavyPrefixEvent => "heavy_prefix_event": Event,
    /// The source table refused an insert (the SYN is still rate limited
    /// and tracked, on a fresh per-packet copy of the source's state).
    SourceInsertFailed => "source_insert_failed": Event,
    /// SYNs handled in attack mode (no per-SYN map insert).
    AttackSyn => "attack_syn": Event,
    /// Times this CPU put the datapath in attack mode (its SYN rate crossed
    /// the threshold).
    AttackEntered => "attack_entered": Event,
    /// Attack-mode SYNs also tracked in full (1 in `attack-sample`).
    AttackSampled => "attack_sampled": Event,
    /// Sampled half-open entries closed by a cookie ACK (already counted in
    /// `cookie_ack_valid`).
    SampledCompleted => "attack_sampled_completed": Event,
    /// Sources the sketch promoted to the source table (heavy in attack mode).
    SketchPromoted => "sketch_promoted": Event,
    /// SYNs answered from XDP with a SYN-ACK carrying a kernel SYN cookie.
    CookieSent => "cookie_sent": Event,
    /// Attack-mode SYN to a port with no listening socket: the kernel answers.
    CookieNoListener => "cookie_no_listener": Event,
    /// Attack-mode SYN whose 4-tuple has a socket (TIME_WAIT, established,
    /// a request in the kernel's queue): the kernel answers.
    CookieOtherSocket => "cookie_other_socket": Event,
    /// The kernel refused to make a cookie (tcp_syncookies not 2, accept
    /// queue full): the kernel answers.
    CookieRefused => "cookie_refused": Event,
    /// Attack-mode SYN with IP options, IPv6 extension headers or other
    /// layouts the responder does not rewrite: the kernel answers.
    CookieOddHeaders => "cookie_odd_headers": Event,
    /// Attack-mode SYN to a listener that this interface does not answer
    /// from XDP now (its replies would not leave, or the sysctls the cookies
    /// need are not in effect): the kernel answers.
    CookieHeld => "cookie_held": Event,
    /// Allow-listed source in attack mode: never answered from XDP.
    CookieSkipAllowed => "cookie_skip_allowed": Event,
    /// Monitor mode: a SYN the responder would have answered.
    MonitorCookie => "monitor_cookie": Monitor,
    /// ACKs to a listener carrying a valid cookie (completed handshakes).
    CookieAckValid => "cookie_ack_valid": Event,
    /// Dropped: an ACK to a listener with no connection and no valid cookie.
    DropAckInvalid => "drop_ack_invalid": Drop,
    /// Monitor mode: an invalid ACK that would have been dropped.
    MonitorAckInvalid => "monitor_ack_invalid": Monitor,
    /// ACKs to a protected port that matched no socket, as the server's
    /// answer shows (TC egress: a RST without ACK from a protected port, the
    /// kernel's reply to such an ACK). In ACK-checking mode they are dropped
    /// in XDP instead (`drop_ack_invalid`) and no longer answered.
    AckUnmatched => "ack_unmatched": Event,
    /// Times this CPU put the datapath in ACK-checking mode (its rate of
    /// unmatched ACKs crossed the threshold).
    AckModeEntered => "ack_mode_entered": Event,
    /// Attack mode, a SYN or ACK not addressed to this host (another
    /// destination MAC, or an address that is not local: forwarded traffic):
    /// neither answered nor dropped, the kernel gets it.
    NotForHost => "not_for_host": Event,
    /// XDP_TX replies the driver failed to transmit: the kernel's
    /// `xdp:xdp_exception` for XDP_TX, and (added by the daemon to what it
    /// reads) veth's own count, `rx_queue_N_xdp_tx_errors`.
    XdpTxFailed => "xdp_tx_failed": Event,
    /// SYNs answered from XDP without a socket lookup (also in
    /// `cookie_sent`): the port's listener was proven by a kernel cookie
    /// within the last second, and the server closed no connection of that
    /// 4-tuple within TIME_WAIT's 60 s.
    CookieNoLookup => "cookie_no_lookup": Event,
}

/// The value stored per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub v: [u64; COUNTER_COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters { v: [0; COUNTER_COUNT] }
    }
}

impl Counters {
    #[inline(always)]
    pub fn get(&self, c: Counter) -> u64 {
        self.v[c as usize]
    }

    /// Element-wise wrapping sum (used to fold the per-CPU values).
    pub fn add(&mut self, other: &Counters) {
        for (a, b) in self.v.iter_mut().zip(other.v.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indices_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for d in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), d.name());
            }
        }
    }

    #[test]
    fn categories_match_the_names() {
        for c in Counter::ALL {
            let prefix = match c.category() {
                Category::Pass => "pass_",
                Category::Drop => "drop_",
                Category::Monitor => "monitor_",
                Category::Event => "",
            };
            assert!(c.name().starts_with(prefix), "{c:?}");
        }
    }

    #[test]
    fn add_folds_cpus() {
        let mut a = Counters::default();
        let mut b = Counters::default();
        b.v[Counter::Syn as usize] = 3;
        a.add(&b);
        a.add(&b);
        assert_eq!(a.get(Counter::Syn), 6);
    }
}
