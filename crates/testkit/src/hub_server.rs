//! A tiny Hugging Face hub stand-in for tests: serves `/{org}/{name}/resolve/{rev}/{path}` from a
//! folder over HTTP/1.1 on 127.0.0.1, with the headers the hub sends (`X-Repo-Commit`, a sha256
//! `ETag`, `Content-Length`) and switchable faults. std only, one thread per connection, and every
//! response closes its connection so the client never waits on keep-alive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// The commit every response reports.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// How the server misbehaves for one file path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Announce the full Content-Length, send half the bytes, close.
    Truncate,
    /// Send the right number of bytes with one flipped, so only a hash check catches it.
    Corrupt,
    /// Answer like the hub does for LFS files: 302 to `/cdn/...` with `X-Linked-Etag`, and the
    /// CDN response carries an unrelated `ETag` and no `X-Repo-Commit`.
    LfsRedirect,
}

#[derive(Default)]
struct State {
    requests: AtomicUsize,
    token: Mutex<Option<String>>,
    faults: Mutex<HashMap<String, Fault>>,
    auth_seen: Mutex<Vec<Option<String>>>,
}

/// A running server; stops and joins its thread on Drop.
pub struct HubServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HubServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl HubServer {
    /// Serves the files under `root` for any `org/name` and revision.
    pub fn start(root: impl Into<PathBuf>) -> io::Result<HubServer> {
        let root = root.into();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, root) = (st.clone(), root.clone());
                // Errors only mean the client went away; the test sees its own side.
                std::thread::spawn(move || {
                    let _ = handle(conn, &root, &st);
                });
            }
        });
        Ok(HubServer {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Base URL to use as HF_ENDPOINT, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Number of HTTP requests received so far (redirect hops count separately).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The Authorization header of each request, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        lock(&self.state.auth_seen).clone()
    }

    /// From now on, answer 401 unless `Authorization: Bearer {token}` is sent.
    pub fn require_token(&self, token: &str) {
        *lock(&self.state.token) = Some(token.to_string());
    }

    /// Makes `path` (relative to the repo root, e.g. `model.safetensors`) misbehave.
    pub fn set_fault(&self, path: &str, fault: Fault) {
        lock(&self.state.faults).insert(path.to_string(), fault);
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn handle(conn: TcpStream, root: &Path, state: &State) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    if method.is_empty() {
        return Ok(()); // the shutdown wake-up or a probe
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    lock(&state.auth_seen).push(auth.clone());
    let mut out = conn;
    let head_only = method == "HEAD";

    let required = lock(&state.token).clone();
    if let Some(token) = required {
        if auth.as_deref() != Some(&format!("Bearer {token}")) {
            return respond(
                &mut out,
                "401 Unauthorized",
                &[],
                b"unauthorized",
                head_only,
            );
        }
    }
    let path = percent_decode(target.split('?').next().unwrap_or(""));
    if let Some(file) = path.strip_prefix("/cdn/") {
        // The CDN leg of an LFS redirect: plain bytes, its own etag, no hub metadata.
        return serve_file(
            &mut out,
            root,
            file,
            None,
            &[("ETag", "\"cdn-object\"")],
            head_only,
        );
    }
    // /{org}/{name}/resolve/{rev}/{file...}
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let file = match segs.as_slice() {
        [_, _, "resolve", _, file] if !file.split('/').any(|c| c == ".." || c.is_empty()) => *file,
        _ => return respond(&mut out, "400 Bad Request", &[], b"bad path", head_only),
    };
    let commit = ("X-Repo-Commit", COMMIT);
    let full = root.join(file);
    if !full.is_file() {
        let hdrs = [commit, ("X-Error-Code", "EntryNotFound")];
        return respond(
            &mut out,
            "404 Not Found",
            &hdrs,
            b"entry not found",
            head_only,
        );
    }
    let fault = lock(&state.faults).get(file).copied();
    let etag = format!("\"{}\"", sha256_file(&full)?);
    if fault == Some(Fault::LfsRedirect) {
        let location = format!("/cdn/{file}");
        let hdrs = [
            commit,
            ("X-Linked-Etag", etag.as_str()),
            ("Location", &location),
        ];
        return respond(&mut out, "302 Found", &hdrs, b"", head_only);
    }
    serve_file(
        &mut out,
        root,
        file,
        fault,
        &[commit, ("ETag", &etag)],
        head_only,
    )
}

fn serve_file(
    out: &mut TcpStream,
    root: &Path,
    file: &str,
    fault: Option<Fault>,
    headers: &[(&str, &str)],
    head_only: bool,
) -> io::Result<()> {
    let full = root.join(file);
    let Ok(mut f) = File::open(&full) else {
        return respond(out, "404 Not Found", &[], b"not found", head_only);
    };
    let len = f.metadata()?.len();
    write_head(out, "200 OK", headers, len)?;
    if head_only {
        return Ok(());
    }
    match fault {
        Some(Fault::Truncate) => {
            io::copy(&mut f.take(len / 2), out)?;
        }
        Some(Fault::Corrupt) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            if let Some(b) = bytes.last_mut() {
                *b ^= 0xff;
            }
            out.write_all(&bytes)?;
        }
        _ => {
            io::copy(&mut f, out)?; // streamed, like a real server
        }
    }
    out.flush()
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    write_head(out, status, headers, body.len() as u64)?;
    if !head_only {
        out.write_all(body)?;
    }
    out.flush()
}

fn write_head(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    len: u64,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

/// Hex sha256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
