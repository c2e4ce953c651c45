//! A hostile HTTP/1.1 server on 127.0.0.1: each request is parsed (request
//! line, headers, Content-Length body) and handed with the connection to a
//! handler that writes whatever it likes: endless bodies, redirects, slow
//! drips, garbage, silence. Keep-alive is the handler's choice: it returns
//! whether to read another request on the same connection. Every request is
//! recorded. Stops on drop (open connections end within their timeouts).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use super::stub::Request;

/// Writes the answer to `conn`; returns true to keep the connection for
/// another request.
pub type Handler = dyn Fn(&Request, &mut TcpStream) -> bool + Send + Sync;

pub struct RawServer {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

impl RawServer {
    pub fn start(
        handler: impl Fn(&Request, &mut TcpStream) -> bool + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw server");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, handler, stopping) = (reqs.clone(), handler.clone(), stopping.clone());
                std::thread::spawn(move || serve(conn, &reqs, &*handler, &stopping));
            }
        });
        RawServer {
            addr: format!("http://127.0.0.1:{port}"),
            requests,
            stop,
            thread: Some(thread),
            port,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, requests: &Mutex<Vec<Request>>, handler: &Handler, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(20)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut conn = conn;
    while !stop.load(Ordering::SeqCst) {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        requests.lock().unwrap().push(req.clone());
        if !handler(&req, &mut conn) {
            let _ = conn.flush();
            let _ = conn.shutdown(std::net::Shutdown::Both);
            return;
        }
        let _ = conn.flush();
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = vec![0u8; len];
    if len > 0 && reader.read_exact(&mut body).is_err() {
        return None;
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A complete response with a JSON body; `keep_alive` sets the Connection header.
pub fn json(conn: &mut TcpStream, status: u16, body: &[u8], keep_alive: bool) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// Streams `total` bytes of `fill` as a body (chunked when `announce` is
/// false, else with Content-Length), without holding them in memory. Stops
/// early when the peer goes away.
pub fn stream_body(conn: &mut TcpStream, total: u64, fill: u8, announce: bool) {
    let head = if announce {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
        )
    } else {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_owned()
    };
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    let chunk = vec![fill; 64 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(chunk.len() as u64) as usize;
        let ok = if announce {
            conn.write_all(&chunk[..n])
        } else {
            conn.write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|_| conn.write_all(&chunk[..n]))
                .and_then(|_| conn.write_all(b"\r\n"))
        };
        if ok.is_err() {
            return;
        }
        sent += n as u64;
    }
    if !announce {
        let _ = conn.write_all(b"0\r\n\r\n");
    }
}
