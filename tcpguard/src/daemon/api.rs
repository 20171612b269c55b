//! Control-socket server. `status` is answered here, rendered from the
//! observation the daemon publishes once per tick (and after an operator's
//! change); requests that change something are
//! forwarded to the daemon loop, which owns the maps, and answered there.

use std::{
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, watch},
};

use crate::{
    config::ControlConfig,
    daemon::{observe::Observation, status},
    maps::monotonic_ns,
    proto::{read_frame, write_frame, Request, Response},
};

/// The latest observation, published by the daemon once per tick.
pub type Snapshot = watch::Receiver<std::sync::Arc<Observation>>;

/// Connections served with the full request deadline at once.
const MAX_CONNS: usize = 256;
/// Connections held at all; beyond, a client is closed at once. Between
/// `MAX_CONNS` and this, a client has [`OVERFLOW_DEADLINE`] to send its
/// request: idle clients cannot starve `status`.
const HARD_CAP: usize = 4096;
/// Requests that reach the daemon loop or scan the source tables at once;
/// beyond, the client is told the daemon is busy.
const MAX_WORK: usize = 32;
/// How long a client has to send its request (a request is one small frame).
const READ_DEADLINE: Duration = Duration::from_secs(2);
const OVERFLOW_DEADLINE: Duration = Duration::from_millis(250);
/// How long an answer may take to be computed and written (a large `top`).
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// The most sources one `top` answer carries (well within `MAX_FRAME`);
/// the answer says how many more there were.
pub const TOP_MAX: usize = 10_000;

pub type ApiCall = (Request, oneshot::Sender<Response>);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("refusing to remove {path}: it exists and is not a socket (control.socket)")]
    NotASocket { path: PathBuf },
    #[error("another tcpguard daemon answers on {path}; stop it first")]
    InUse { path: PathBuf },
    #[error("cannot set up the control socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control.group {group:?}: no such group")]
    NoGroup { group: String },
}

/// Bind the socket: create its directory, clear a stale socket (never a
/// non-socket file), apply mode and group.
pub fn bind(cfg: &ControlConfig) -> Result<UnixListener, ApiError> {
    let path = cfg.socket.as_path();
    let io = |source| ApiError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => return Err(ApiError::NotASocket { path: path.to_path_buf() }),
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ApiError::InUse { path: path.to_path_buf() });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode_bits())).map_err(io)?;
    if !cfg.group.is_empty() {
        let gid = group_id(&cfg.group).ok_or_else(|| ApiError::NoGroup { group: cfg.group.clone() })?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    }
    Ok(l)
}

fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer into static storage or null.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    (!g.is_null()).then(|| unsafe { (*g).gr_gid })
}

/// Accept connections; each gets one request. Idle or slow clients are cut
/// at the request deadline; `status` is answered on every connection the
/// daemon holds, while `top` and the commands that change something take
/// one of [`MAX_WORK`] slots or are told the daemon is busy. An accept
/// error (EMFILE, ENFILE, ENOMEM) backs off instead of spinning, so the
/// daemon's tick never starves.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<ApiCall>, snapshot: Snapshot, top: TopTables) {
    let conns = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNS));
    let all = std::sync::Arc::new(tokio::sync::Semaphore::new(HARD_CAP));
    let work = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_WORK));
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                log::warn!("control socket: accept failed ({e}); backing off");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(held) = all.clone().try_acquire_owned() else {
            drop(sock); // past the hard cap: closed at once
            continue;
        };
        let slot = conns.clone().try_acquire_owned().ok();
        let deadline = if slot.is_some() { READ_DEADLINE } else { OVERFLOW_DEADLINE };
        let (tx, snapshot, top, work) = (tx.clone(), snapshot.clone(), top.clone(), work.clone());
        tokio::spawn(async move {
            let _held = (held, slot);
            handle(sock, deadline, Ctx { tx, snapshot, top, work }).await;
        });
    }
}

/// What a connection's handler needs from the server.
struct Ctx {
    tx: mpsc::Sender<ApiCall>,
    snapshot: Snapshot,
    top: TopTables,
    work: std::sync::Arc<tokio::sync::Semaphore>,
}

fn busy() -> Response {
    Response::Error { message: format!("the daemon is busy ({MAX_WORK} requests in progress); try again in a moment") }
}

async fn handle(mut sock: UnixStream, deadline: Duration, cx: Ctx) {
    let Ok(req) = tokio::time::timeout(deadline, read_frame::<_, Request>(&mut sock)).await else {
        let message = format!("no request within {} ms; closing", deadline.as_millis());
        let _ = tokio::time::timeout(deadline, write_frame(&mut sock, &Response::Error { message })).await;
        return;
    };
    let answer = async {
        match req {
            Ok(Request::Status) => {
                let obs = cx.snapshot.borrow().clone();
                Response::Status(Box::new(status::render(&obs, monotonic_ns())))
            }
            Ok(Request::Top { limit }) => {
                let Ok(_work) = cx.work.try_acquire() else { return busy() };
                // The scan costs O(table size): on a blocking thread, off the
                // daemon's loop, so it never delays the tick or the watchdog.
                let obs = cx.snapshot.borrow().clone();
                let heavy: Vec<_> = status::render(&obs, monotonic_ns()).top_sources;
                let top = cx.top.clone();
                match tokio::task::spawn_blocking(move || scan_top(&top, &heavy, limit)).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(e)) => Response::Error { message: format!("reading the source tables: {e}") },
                    Err(e) => Response::Error { message: format!("reading the source tables: {e}") },
                }
            }
            Ok(req) => {
                let Ok(_work) = cx.work.try_acquire() else { return busy() };
                let (rtx, rrx) = oneshot::channel();
                if cx.tx.send((req, rtx)).await.is_err() {
                    Response::Error { message: "the daemon is shutting down".into() }
                } else {
                    rrx.await.unwrap_or(Response::Error { message: "the daemon dropped the request".into() })
                }
            }
            Err(e) => Response::Error { message: format!("bad request: {e}") },
        }
    };
    let _ = tokio::time::timeout(ANSWER_DEADLINE, async {
        let resp = answer.await;
        let _ = write_frame(&mut sock, &resp).await;
        if matches!(&resp, Response::Top { sources, .. } if sources.len() > 1000) {
            drop(resp);
            give_back_memory();
        }
    })
    .await;
}

/// Return freed heap to the kernel after a large answer: glibc keeps it
/// otherwise, and the daemon's RSS would stay at its peak.
fn give_back_memory() {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The pinned source tables `top` reads (one per interface).
pub type TopTables = std::sync::Arc<Vec<PathBuf>>;

/// Every tracked source over all tables, heaviest first: by the current
/// rate of the heavy sources the daemon follows, then by total SYNs.
fn scan_top(
    tables: &[PathBuf],
    heavy: &[crate::proto::SourceView],
    limit: usize,
) -> Result<Response, aya::maps::MapError> {
    use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
    use tcpguard_common::{SrcKey, SrcStats};
    let mut by: std::collections::HashMap<std::net::IpAddr, crate::proto::SourceView> =
        std::collections::HashMap::new();
    for path in tables {
        let m: BpfHashMap<MapData, SrcKey, SrcStats> = BpfHashMap::try_from(Map::LruHashMap(MapData::from_pin(path)?))?;
        for kv in &m {
            let (k, s) = match kv {
                Ok(kv) => kv,
                // LRU eviction while iterating: skip, the next scan sees the rest.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(e),
            };
            let addr = crate::maps::key_addr(&k);
            let v = by.entry(addr).or_insert(crate::proto::SourceView {
                addr,
                prefix_len: None,
                syn_per_sec: 0.0,
                syns: 0,
                completed: 0,
                half_open: 0,
                dropped: 0,
            });
            v.syns += s.syns;
            v.completed += s.completed;
            v.half_open += s.half_open;
            v.dropped += s.dropped;
        }
    }
    for h in heavy {
        if let Some(v) = by.get_mut(&h.addr) {
            v.syn_per_sec = h.syn_per_sec;
        }
    }
    let mut v: Vec<_> = by.into_values().collect();
    v.sort_by(|a, b| b.syn_per_sec.total_cmp(&a.syn_per_sec).then(b.syns.cmp(&a.syns)));
    let keep = limit.min(TOP_MAX);
    let left_out = v.len().saturating_sub(keep);
    v.truncate(keep);
    v.shrink_to_fit();
    Ok(Response::Top { sources: v, left_out })
}

/// Remove the socket file if it is (still) a socket.
pub fn remove(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_to_unlink_a_regular_file_and_detects_a_live_daemon() {
        let dir = std::env::temp_dir().join(format!("tcpguard-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        std::fs::write(&path, "precious").unwrap();
        let cfg = ControlConfig { socket: path.clone(), mode: crate::config::SocketMode(0o600), group: String::new() };
        assert!(matches!(bind(&cfg), Err(ApiError::NotASocket { .. })));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();

        let l = bind(&cfg).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(bind(&cfg), Err(ApiError::InUse { .. })));
        drop(l);
        // A stale socket (nobody listening) is replaced.
        let _l2 = bind(&cfg).unwrap();
        remove(&path);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn request_response_through_the_socket() {
        let dir = std::env::temp_dir().join(format!("tcpguard-api2-{}", std::process::id()));
        let cfg = ControlConfig { socket: dir.join("s"), mode: crate::config::SocketMode(0o660), group: String::new() };
        let l = bind(&cfg).unwrap();
        let (tx, mut rx) = mpsc::channel::<ApiCall>(4);
        let (_stx, srx) =
            watch::channel(std::sync::Arc::new(Observation { half_open: 4242, ..Observation::default() }));
        tokio::spawn(serve(l, tx, srx, TopTables::default()));
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let _ = reply.send(Response::Done { message: format!("{req:?}") });
            }
        });
        let mut c = UnixStream::connect(&cfg.socket).await.unwrap();
        write_frame(&mut c, &Request::Unblock { prefix: "10.0.0.0/8".parse().unwrap() }).await.unwrap();
        let r: Response = read_frame(&mut c).await.unwrap();
        assert_eq!(r, Response::Done { message: "Unblock { prefix: Prefix { addr: 10.0.0.0, len: 8 } }".into() });
        // Garbage gets an error response, not a hang or a crash.
        let mut c = UnixStream::connect(&cfg.socket).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut c, &3u32.to_be_bytes()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut c, b"???").await.unwrap();
        let r: Response = read_frame(&mut c).await.unwrap();
        assert!(matches!(r, Response::Error { message } if message.starts_with("bad request")));
        // Status comes from the published snapshot, not the daemon loop.
        let mut c = UnixStream::connect(&cfg.socket).await.unwrap();
        write_frame(&mut c, &Request::Status).await.unwrap();
        let r: Response = read_frame(&mut c).await.unwrap();
        assert!(matches!(r, Response::Status(v) if v.half_open == 4242));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
