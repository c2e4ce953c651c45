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
