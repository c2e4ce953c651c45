//! A TCP proxy for fault tests: passes, delays, stalls or resets
//! connections to a backend, switchable while tests run. 127.0.0.1 only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Wait before forwarding a new connection.
    Delay(Duration),
    /// Accept and read, never answer.
    Stall,
    /// Close every connection at once (the backend is down).
    Reset,
}

pub struct Proxy {
    pub addr: String,
    mode: Arc<Mutex<Mode>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `backend` (`http://host:port` or `host:port`).
    pub async fn start(backend: &str, mode: Mode) -> Proxy {
        let backend = backend.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mode = Arc::new(Mutex::new(mode));
        let shared = mode.clone();
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let tracked = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mode = *shared.lock().unwrap();
                let backend = backend.clone();
                let handle = tokio::spawn(async move {
                    match mode {
                        Mode::Reset => drop(client),
                        Mode::Stall => {
                            let mut sink = [0u8; 4096];
                            // Hold the connection, answer nothing (bounded: tests end sooner).
                            let _ = tokio::time::timeout(Duration::from_secs(120), async {
                                use tokio::io::AsyncReadExt;
                                while let Ok(n) = client.read(&mut sink).await {
                                    if n == 0 {
                                        break;
                                    }
                                }
                            })
                            .await;
                        }
                        Mode::Pass | Mode::Delay(_) => {
                            if let Mode::Delay(d) = mode {
                                tokio::time::sleep(d).await;
                            }
                            if let Ok(mut upstream) = tokio::net::TcpStream::connect(&backend).await
                            {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            }
                        }
                    }
                });
                let mut tracked = tracked.lock().unwrap();
                tracked.retain(|h| !h.is_finished());
                tracked.push(handle.abort_handle());
            }
        });
        Proxy {
            addr,
            mode,
            conns,
            task,
        }
    }

    /// Switches the mode; anything but `Pass` also cuts open connections
    /// (a backend going down mid-run takes its keep-alive connections with it).
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        if mode != Mode::Pass {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// An HTTP forward proxy, as `HTTPS_PROXY`/`HTTP_PROXY` name one: `CONNECT
/// host:port` is tunnelled, an absolute-form request (`GET http://host/...`)
/// is forwarded with the connection piped from then on. It records the
/// target of every connection (`host:port`). 127.0.0.1 only; connections
/// idle for 60 s are dropped, and dropping the proxy stops it.
pub struct ForwardProxy {
    pub url: String,
    recorder: Recorder,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        let recorder = Recorder::start(forward);
        ForwardProxy {
            url: format!("http://{}", recorder.addr),
            recorder,
        }
    }

    /// `host:port` of every connection made through the proxy so far.
    pub fn targets(&self) -> Vec<String> {
        self.recorder.seen()
    }
}

/// A proxy's accept loop on 127.0.0.1 (a thread per connection, handed to
/// `handle` with the list it records into), stopped when dropped.
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Recorder {
    fn start(
        handle: impl Fn(std::net::TcpStream, &Mutex<Vec<String>>) -> std::io::Result<()>
        + Send
        + Sync
        + 'static,
    ) -> Recorder {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (recorded, stopped) = (seen.clone(), stop.clone());
        let handle = Arc::new(handle);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (handle, recorded) = (handle.clone(), recorded.clone());
                std::thread::spawn(move || {
                    let _ = handle(client, &recorded);
                });
            }
        });
        Recorder { seen, stop, addr }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// A request head (up to the blank line, at most 64 KiB); None when the
/// client closed or sent more.
fn read_head(client: &mut std::net::TcpStream) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || client.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

/// A path-routing reverse proxy, as a gateway that serves Vault under a
/// path (`http://gateway/vault/...` → `http://vault/...`): it strips
/// `prefix` from each request's path and forwards it (one request per
/// connection: it asks the backend to close after answering), records the
/// paths it got, and answers 404 to any path without the prefix.
pub struct PathProxy {
    /// `http://127.0.0.1:PORT` + the prefix.
    pub url: String,
    recorder: Recorder,
}

impl PathProxy {
    pub fn start(backend: &str, prefix: &'static str) -> PathProxy {
        let backend = backend.trim_start_matches("http://").to_owned();
        let recorder = Recorder::start(move |client, seen| route(client, &backend, prefix, seen));
        PathProxy {
            url: format!("http://{}{prefix}", recorder.addr),
            recorder,
        }
    }

    /// The path (and query) of every request the proxy got.
    pub fn paths(&self) -> Vec<String> {
        self.recorder.seen()
    }
}

fn route(
    mut client: std::net::TcpStream,
    backend: &str,
    prefix: &str,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use std::io::Write;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let Some(text) = read_head(&mut client)? else {
        return Ok(());
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, ' ');
    let (method, path, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    seen.lock().unwrap().push(path.to_owned());
    let Some(stripped) = path
        .strip_prefix(prefix)
        .filter(|rest| rest.starts_with('/'))
    else {
        client.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let mut forwarded = format!("{method} {stripped} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut upstream = std::net::TcpStream::connect(backend)?;
    upstream.write_all(forwarded.as_bytes())?;
    let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
    Ok(())
}

fn forward(mut client: std::net::TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    use std::io::Write;
    let idle = Some(Duration::from_secs(60));
    client.set_read_timeout(idle)?;
    let Some(text) = read_head(&mut client)? else {
        return Ok(());
    };
    let line = text.lines().next().unwrap_or_default().to_owned();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (authority, rest) = if method == "CONNECT" {
        (target.to_owned(), None)
    } else if let Some(url) = target.strip_prefix("http://") {
        let (host, path) = url.split_at(url.find('/').unwrap_or(url.len()));
        let host = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let path = if path.is_empty() { "/" } else { path };
        (host, Some(text.replacen(target, path, 1)))
    } else {
        client.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")?;
        return Ok(());
    };
    seen.lock().unwrap().push(authority.clone());
    let mut upstream = match std::net::TcpStream::connect(&authority) {
        Ok(u) => u,
        Err(_) => {
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    upstream.set_read_timeout(idle)?;
    match rest {
        None => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?,
        Some(origin_form) => upstream.write_all(origin_form.as_bytes())?,
    }
    let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}
