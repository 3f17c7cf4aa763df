//! Serving one device's clients: accepting a connection (at most
//! [`MAX_CLIENTS_PER_DEVICE`] at once), sending its setup stream as fast as its socket takes
//! it, and dropping a client that closes, sends anything, or does not read its stream in
//! time.

use std::os::fd::OwnedFd;
use std::time::Instant;

use rustix::net::{accept_with, SocketFlags};

use super::Server;
use crate::protocol::{buffer_for, send_message};

/// Clients one device serves at once: a restarting QEMU overlaps its predecessor briefly;
/// more than this is refused, so that no client can make serve run out of fds.
pub const MAX_CLIENTS_PER_DEVICE: usize = 4;

/// One accepted client.
pub(super) struct Client {
    pub(super) device: usize,
    pub(super) fd: OwnedFd,
    /// Messages of the stream sent so far, and in all.
    pub(super) sent: usize,
    pub(super) total: usize,
    pub(super) accepted: Instant,
    pub(super) who: String,
}

impl Server {
    /// Drops the clients that did not take their stream in time.
    pub(super) fn drop_late(&mut self) {
        let now = Instant::now();
        // Clients that did not take their stream in time.
        let late: Vec<usize> = (0..self.clients.len())
            .filter(|&i| {
                let c = &self.clients[i];
                c.sent < c.total && now >= c.accepted + self.options.send_timeout
            })
            .collect();
        for i in late.into_iter().rev() {
            let c = &self.clients[i];
            let why = format!(
                "took {} of its {} setup messages in {:?}: it does not read",
                c.sent, c.total, self.options.send_timeout
            );
            self.drop_client(i, &why);
        }
    }

    pub(super) fn accept(&mut self, device: usize) {
        loop {
            let fd = match accept_with(
                &self.devices[device].listener,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => {
                    let line = format!("{}: accept failed: {e}", self.name(device));
                    (self.log)(line);
                    return;
                }
            };
            let who = match rustix::net::sockopt::socket_peercred(&fd) {
                Ok(c) => format!("pid {} uid {}", c.pid.as_raw_nonzero(), c.uid.as_raw()),
                Err(_) => "a client".into(),
            };
            let serving = self.clients.iter().filter(|c| c.device == device).count();
            if serving >= MAX_CLIENTS_PER_DEVICE {
                let line = format!(
                    "{}: {who} refused: {serving} clients already connected",
                    self.name(device)
                );
                (self.log)(line);
                continue;
            }
            let total = match self.stream(device) {
                Ok(m) => m.len(),
                Err(e) => {
                    let line = format!("{}: {who}: no stream: {e:#}", self.name(device));
                    (self.log)(line);
                    continue;
                }
            };
            let want = match self.options.sndbuf_cap {
                Some(cap) => buffer_for(total).min(cap),
                None => buffer_for(total),
            };
            use rustix::net::sockopt;
            if self.options.sndbuf_cap.is_some()
                || sockopt::set_socket_send_buffer_size_force(&fd, want).is_err()
            {
                let _ = sockopt::set_socket_send_buffer_size(&fd, want);
            }
            self.clients.push(Client {
                device,
                fd,
                sent: 0,
                total,
                accepted: Instant::now(),
                who,
            });
            self.pump(self.clients.len() - 1);
        }
    }

    /// Sends what the client's socket takes of the rest of its stream.
    pub(super) fn pump(&mut self, i: usize) {
        let c = &self.clients[i];
        let d = &self.devices[c.device].spec;
        let msgs = match self.stream(c.device) {
            Ok(m) => m,
            Err(e) => {
                let why = format!("no stream: {e:#}");
                self.drop_client(i, &why);
                return;
            }
        };
        let mut sent = c.sent;
        let mut failed = None;
        while sent < msgs.len() {
            match send_message(&c.fd, &msgs[sent]) {
                Ok(()) => sent += 1,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let line = (sent == msgs.len() && c.sent < msgs.len()).then(|| {
            format!(
                "{}: {} connected: sent its setup (peer id {}, peer {} id {}, {} vector(s), \
                 {} MiB, {} messages)",
                self.name(c.device),
                c.who,
                d.own_id,
                d.peer,
                d.peer_id,
                d.vectors,
                d.segment_size >> 20,
                msgs.len()
            )
        });
        drop(msgs);
        self.clients[i].sent = sent;
        if line.is_some() {
            let d = self.clients[i].device;
            self.devices[d].setups += 1;
        }
        if let Some(e) = failed {
            self.drop_client(i, &format!("sending its setup failed ({e})"));
        } else if let Some(line) = line {
            (self.log)(line);
        }
    }

    /// The client's socket is readable: it closed, failed, or sent something.
    pub(super) fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 256];
        let why = match rustix::io::read(&self.clients[i].fd, &mut buf) {
            Ok(0) => "disconnected".to_string(),
            Ok(n) => format!("sent {n} byte(s), but clients must not send anything"),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return,
            Err(e) => format!("connection error ({e})"),
        };
        self.drop_client(i, &why);
    }

    pub(super) fn drop_client(&mut self, i: usize, why: &str) {
        let c = self.clients.remove(i);
        let closed = if why == "disconnected" {
            String::new()
        } else {
            "; dropped".into()
        };
        let line = format!("{}: {} {why}{closed}", self.name(c.device), c.who);
        (self.log)(line);
    }
}
