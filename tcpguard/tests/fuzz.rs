//! Fuzz targets for the control socket's framing (4-byte big-endian length,
//! JSON body, capped at `MAX_FRAME`), each run for `TCPGUARD_FUZZ_SECS`
//! seconds (default 5; `cargo xtask fuzz --secs N` for longer):
//! - the frame reader on arbitrary and mutated byte streams: the outcome is
//!   the one the format defines (short → I/O error, over the cap → refused
//!   before reading, else the JSON's verdict), and every decoded request is
//!   well formed (prefixes normalised and within their family's length);
//! - random request sequences written back to back read back in order;
//! - the real control-socket server, fed the same streams over a Unix
//!   socket: every connection gets exactly one well-formed response (an
//!   error for a bad request, the daemon's answer for a good one, which the
//!   daemon saw exactly as sent), and the server keeps answering.

use std::{net::IpAddr, sync::Arc, time::Duration};

use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};
use tcpguard::{
    config::{ControlConfig, SocketMode},
    daemon::api::{self, ApiCall, TopTables},
    net::Prefix,
    proto::{read_frame, write_frame, ProtoError, Request, Response, MAX_FRAME},
};
use tcpguard_common::fuzzing::fuzz_for;
use tokio::{io::AsyncWriteExt as _, net::UnixStream, sync::mpsc};

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| Prefix::new(IpAddr::from(a), l)),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| Prefix::new(IpAddr::from(a), l)),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Status),
        any::<usize>().prop_map(|limit| Request::Top { limit }),
        (prefix(), proptest::option::of(any::<u64>()), any::<bool>())
            .prop_map(|(prefix, ttl_secs, force)| Request::Block { prefix, ttl_secs, force }),
        prefix().prop_map(|prefix| Request::Unblock { prefix }),
        (prefix(), any::<bool>()).prop_map(|(prefix, force)| Request::Allow { prefix, force }),
        prefix().prop_map(|prefix| Request::Unallow { prefix }),
        (
            proptest::option::of(prefix()),
            proptest::option::of(prefix()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(src, dst, port, rate_limit, ttl_secs)| Request::UpstreamAnnounce(
                tcpguard::upstream::plan::HandRule { src, dst, port, rate_limit, ttl_secs }
            )),
        (proptest::option::of(prefix()), proptest::option::of(prefix()), proptest::option::of(any::<u16>()))
            .prop_map(|(src, dst, port)| Request::UpstreamWithdraw { src, dst, port }),
    ]
}

fn frame(req: &Request) -> Vec<u8> {
    let body = serde_json::to_vec(req).unwrap();
    [&(body.len() as u32).to_be_bytes()[..], &body].concat()
}

/// Byte streams a client could send: arbitrary bytes, a random length in
/// front of random bytes, and real request frames with bytes overwritten,
/// cut, or with their length field changed.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let json_ish = prop_oneof![
        Just(b"{\"cmd\":\"block\",\"prefix\":\"".to_vec()),
        Just(b"{\"cmd\":\"status\"}".to_vec()),
        Just(b"\"ttl_secs\":18446744073709551616".to_vec()),
        Just(b"/33\"".to_vec()),
        vec(any::<u8>(), 0..8),
    ];
    prop_oneof![
        vec(any::<u8>(), 0..64),
        (prop_oneof![0u32..64, Just(MAX_FRAME), Just(MAX_FRAME + 1), any::<u32>()], vec(any::<u8>(), 0..64))
            .prop_map(|(len, body)| [&len.to_be_bytes()[..], &body].concat()),
        (request(), vec((any::<usize>(), any::<u8>()), 0..4), any::<Option<usize>>(), vec(json_ish, 0..3)).prop_map(
            |(r, sets, cut, splice)| {
                let mut f = frame(&r);
                for (i, v) in sets {
                    let n = f.len();
                    f[i % n] = v;
                }
                if let Some(c) = cut {
                    f.truncate(c % (f.len() + 1));
                }
                for s in splice {
                    f.extend_from_slice(&s);
                }
                f
            }
        ),
    ]
}

/// A decoded request is well formed: its prefix normalised and in range.
fn well_formed(r: &Request) -> Result<(), TestCaseError> {
    let ps: Vec<&Prefix> = match r {
        Request::Block { prefix, .. }
        | Request::Unblock { prefix }
        | Request::Allow { prefix, .. }
        | Request::Unallow { prefix } => vec![prefix],
        Request::UpstreamAnnounce(h) => h.src.iter().chain(h.dst.iter()).collect(),
        Request::UpstreamWithdraw { src, dst, .. } => src.iter().chain(dst.iter()).collect(),
        Request::Status | Request::Top { .. } => return Ok(()),
    };
    for p in ps {
        let max = if p.addr.is_ipv4() { 32 } else { 128 };
        prop_assert!(p.len <= max, "{p:?}");
        prop_assert_eq!(Prefix::new(p.addr, p.len), *p, "host bits set");
    }
    Ok(())
}

/// What the format says a stream decodes to (None: an error is expected,
/// with the reason's kind).
enum Expect {
    Io,
    TooLarge,
    Json(Result<Request, ()>),
}

fn expect(s: &[u8]) -> Expect {
    let Some(len) = s.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { return Expect::Io };
    if len > MAX_FRAME {
        return Expect::TooLarge;
    }
    match s.get(4..4 + len as usize) {
        None => Expect::Io,
        Some(body) => Expect::Json(serde_json::from_slice(body).map_err(drop)),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn fuzz_frame_reader() {
    let rt = rt();
    let n = fuzz_for("control_frame_reader", stream(), |s| {
        let got = rt.block_on(read_frame::<_, Request>(&mut &s[..]));
        match (expect(&s), got) {
            (Expect::Io, Err(ProtoError::Io(e))) => prop_assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            (Expect::TooLarge, Err(ProtoError::TooLarge { len })) => prop_assert!(len > MAX_FRAME),
            (Expect::Json(Ok(want)), Ok(r)) => {
                prop_assert_eq!(&r, &want);
                well_formed(&r)?;
            }
            (Expect::Json(Err(())), Err(ProtoError::Json(_))) => {}
            (_, got) => prop_assert!(false, "unexpected outcome {got:?}"),
        }
        Ok(())
    });
    assert!(n > 0);
}

#[test]
fn fuzz_frames_round_trip_in_order() {
    let rt = rt();
    let n = fuzz_for("control_frames_round_trip", vec(request(), 1..8), |reqs| {
        rt.block_on(async {
            let mut buf = Vec::new();
            for r in &reqs {
                write_frame(&mut buf, r).await.unwrap();
            }
            let mut rd = &buf[..];
            for r in &reqs {
                let got: Request = read_frame(&mut rd).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&got, r);
            }
            prop_assert!(rd.is_empty(), "{} bytes left over", rd.len());
            Ok(())
        })
    });
    assert!(n > 0);
}

#[test]
fn fuzz_control_server() {
    let rt = rt();
    let dir = std::env::temp_dir().join(format!("tcpguard-fuzz-{}", std::process::id()));
    let cfg = ControlConfig { socket: dir.join("s"), mode: SocketMode(0o600), group: String::new() };
    // The real server, with a stand-in for the daemon loop that answers
    // every forwarded request with what it received.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<Request>();
    rt.block_on(async {
        let l = api::bind(&cfg).unwrap();
        let (tx, mut rx) = mpsc::channel::<ApiCall>(16);
        // A published observation the status answers must come from.
        let snap = tcpguard::daemon::observe::Observation { half_open: 7467, ..Default::default() };
        let (keep, srx) = tokio::sync::watch::channel(Arc::new(snap));
        // The snapshot stays published for the whole run.
        std::mem::forget(keep);
        tokio::spawn(api::serve(l, tx, srx, TopTables::default()));
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                seen_tx.send(req.clone()).unwrap();
                let _ = reply.send(Response::Done { message: serde_json::to_string(&req).unwrap() });
            }
        });
    });
    let ask = |bytes: &[u8]| -> Result<Response, String> {
        rt.block_on(async {
            let mut c = UnixStream::connect(&cfg.socket).await.map_err(|e| e.to_string())?;
            c.write_all(bytes).await.map_err(|e| e.to_string())?;
            c.shutdown().await.map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(5), read_frame::<_, Response>(&mut c))
                .await
                .map_err(|_| "no response within 5 s".to_string())?
                .map_err(|e| e.to_string())
        })
    };
    let n = fuzz_for("control_server", stream(), |s| {
        let resp = ask(&s).map_err(TestCaseError::fail)?;
        if let Expect::Json(Ok(req)) = expect(&s) {
            match (&req, resp) {
                (Request::Status, Response::Status(v)) => prop_assert_eq!(v.half_open, 7467),
                (Request::Top { .. }, Response::Top { .. }) => {}
                (_, Response::Done { message }) => {
                    // The daemon saw the request exactly as sent.
                    let seen = seen_rx.try_recv().map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(&seen, &req);
                    prop_assert_eq!(message, serde_json::to_string(&req).unwrap());
                }
                (_, r) => prop_assert!(false, "{req:?} answered {r:?}"),
            }
        } else {
            let bad = matches!(&resp, Response::Error { message } if message.starts_with("bad request"));
            prop_assert!(bad, "{resp:?}");
            prop_assert!(seen_rx.try_recv().is_err(), "a bad request reached the daemon");
        }
        Ok(())
    });
    // Still serving after every input.
    let after = ask(&frame(&Request::Status)).unwrap();
    assert!(matches!(after, Response::Status(v) if v.half_open == 7467));
    api::remove(&cfg.socket);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(n > 0);
}
