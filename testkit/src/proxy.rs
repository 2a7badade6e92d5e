//! A TCP proxy between copies and Redis that passes, delays, holds
//! (a silent network: nothing forwarded, no RST) or cuts traffic on command.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Every chunk, each way, is forwarded this much later.
    Delay(Duration),
    /// Nothing is forwarded until the mode changes; connections stay open.
    Hold,
    /// Connections opened before the `n`th one through this proxy are delayed
    /// as with `Delay`; newer ones pass: bytes of an old connection arrive
    /// after those of a new one, as on a path that went slow.
    DelayOlderThan(Duration, u64),
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let proxy = Self {
            port,
            mode: Arc::new(Mutex::new(Mode::Pass)),
            stop: Arc::new(AtomicBool::new(false)),
            streams: Arc::default(),
            accepted: Arc::default(),
        };
        let (mode, stop, streams, accepted) = (
            proxy.mode.clone(),
            proxy.stop.clone(),
            proxy.streams.clone(),
            proxy.accepted.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let index = accepted.fetch_add(1, Ordering::Relaxed);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    let mut all = streams.lock().unwrap_or_else(|p| p.into_inner());
                    all.push(c);
                    all.push(s);
                }
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        pump(from, to, mode.clone(), stop.clone(), index);
                    }
                }
            }
        });
        proxy
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// Closes every connection through the proxy (new ones are accepted).
    pub fn cut(&self) {
        for stream in self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn current(mode: &Mutex<Mode>) -> Mode {
    *mode.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads from `from` and writes to `to` through a delay line.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    index: u64,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader_mode = mode.clone();
    let reader_stop = stop.clone();
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
        let mut buf = vec![0u8; 64 * 1024];
        while !reader_stop.load(Ordering::Relaxed) {
            if current(&reader_mode) == Mode::Hold {
                // Read nothing: the sender's buffers fill, as on a dead link.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((read_at, chunk)) = rx.recv() {
            loop {
                match current(&mode) {
                    Mode::Hold if !stop.load(Ordering::Relaxed) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Mode::Delay(delay) | Mode::DelayOlderThan(delay, _) if !matches!(current(&mode), Mode::DelayOlderThan(_, n) if index >= n) =>
                    {
                        let due = read_at + delay;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        break;
                    }
                    _ => break,
                }
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
