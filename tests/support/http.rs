//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`, enough for the
//! OpenBao API and coffer's health endpoint in tests (one request per
//! connection, `Connection: close`, Content-Length or chunked bodies).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Per-request connect/read/write timeout. Generous: it only bounds a hung
/// server. On a loaded 2-core machine moto took over 10 s to answer a
/// request now and then, and the read failed with EAGAIN (a read timeout on
/// a blocking socket reports `WouldBlock` on Linux).
pub const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Value::Null` for an empty body. Panics on invalid JSON.
    pub fn json(&self) -> serde_json::Value {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Timeout of a readiness probe: a server still starting (or a port held by
/// something that never answers) must not hold the start-up loop, which
/// also watches for the process exiting.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `base` is `http://HOST:PORT` or `HOST:PORT`; `path` starts with `/`.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    request_within(base, method, path, headers, body, TIMEOUT)
}

/// A readiness probe: `GET path` within [`PROBE_TIMEOUT`].
pub fn probe(base: &str, path: &str) -> io::Result<Response> {
    request_within(base, "GET", path, &[], None, PROBE_TIMEOUT)
}

/// [`request`] with another connect/read/write timeout.
pub fn request_within(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Response> {
    let hostport = base
        .strip_prefix("http://")
        .unwrap_or(base)
        .trim_end_matches('/');
    let addr: SocketAddr = hostport.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {base}"))
    })?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    } else if matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    stream.write_all(&bytes)?;
    stream.flush()?;

    let mut raw = Vec::new();
    // Read to EOF (Connection: close), tolerating a reset after a complete
    // response.
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{method} {base}{path}: no answer within {timeout:?}"),
                ));
            }
            Err(e) => return Err(e),
        }
        if response_complete(&raw) {
            break;
        }
    }
    parse_response(&raw)
}

pub fn get(base: &str, path: &str) -> io::Result<Response> {
    request(base, "GET", path, &[], None)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find_head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

/// True once a Content-Length body has fully arrived (lets us stop reading
/// even if a server keeps the socket open). Chunked / unknown-length bodies
/// are read to EOF.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = find_head_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    if head.contains("transfer-encoding:") {
        return raw.ends_with(b"0\r\n\r\n");
    }
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:")
            && let Ok(n) = v.trim().parse::<usize>()
        {
            return raw.len() >= end + 4 + n;
        }
    }
    false
}

/// Parses a complete raw HTTP/1.x response (head + body).
pub fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let end = find_head_end(raw).ok_or_else(|| invalid("incomplete HTTP response head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("non-UTF-8 response head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some((_, v)) = headers.iter().find(|(k, _)| k == "content-length") {
        let n: usize = v.parse().map_err(|_| invalid("bad content-length"))?;
        if rest.len() < n {
            return Err(invalid("truncated body"));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn decode_chunked(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size_str =
            std::str::from_utf8(&data[..line_end]).map_err(|_| invalid("bad chunk size"))?;
        let size_hex = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
