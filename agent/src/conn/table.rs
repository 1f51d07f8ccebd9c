//! The connection table: what the agent knows about each live TCP socket,
//! keyed by the kernel socket pointer (a join key that never leaves the
//! agent). Events in softirq context (retransmits) carry no useful task, so
//! they are attributed through the owner recorded here.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

/// Hasher for socket-pointer keys: they come from our own kernel programs,
/// not from the network, so a fast mixer is safe (SipHash costs more than
/// the rest of the per-event work).
#[derive(Default)]
pub struct SockKeyHasher(u64);

impl Hasher for SockKeyHasher {
    fn finish(&self) -> u64 {
        // splitmix64 finaliser: pointers differ mostly in middle bits.
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type SockMap<V> = HashMap<u64, V, BuildHasherDefault<SockKeyHasher>>;

/// Which end the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The process connected (active open).
    Client,
    /// The process accepted (passive open).
    Server,
}

/// The task that owns a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub comm: Arc<str>,
    pub cgroup_id: u64,
}

#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub owner: Option<Owner>,
    /// Resolved `service_name` and pod labels, cached once the owner is known.
    pub service: Option<crate::request::service::ServiceIdentity>,
    pub role: Option<Role>,
    /// SYN_SENT → ESTABLISHED, for connections the process opened.
    pub connect_ns: Option<u64>,
    /// Retransmitted segments so far (cumulative, for per-request deltas).
    pub retrans_segs: u64,
    /// `retrans_segs` when the last request on this connection completed.
    pub retrans_reported: u64,
    /// Requests completed on this connection.
    pub requests: u64,
    /// The retransmit counter of this connection's labels, resolved once:
    /// later retransmits are one atomic add. Cleared when the owner changes.
    pub retrans_counter: Option<Counter>,
    pub last_seen_ns: u64,
    /// First event seen for this socket address (see `remove_if_older`).
    pub first_seen_ns: u64,
    /// Its HTTP was read as TLS plaintext (`url.scheme="https"`).
    pub tls: bool,
}

impl ConnInfo {
    fn new(now_ns: u64) -> Self {
        Self {
            local: None,
            remote: None,
            owner: None,
            service: None,
            role: None,
            connect_ns: None,
            retrans_segs: 0,
            retrans_reported: 0,
            requests: 0,
            retrans_counter: None,
            last_seen_ns: now_ns,
            first_seen_ns: now_ns,
            tls: false,
        }
    }

    /// Role if known, else a guess from the ports: a local port outside the
    /// ephemeral range facing an ephemeral remote port is a server socket.
    pub fn role_or_guess(&self) -> Role {
        if let Some(r) = self.role {
            return r;
        }
        match (self.local, self.remote) {
            (Some(l), Some(r)) if l.port() < 32768 && r.port() >= 32768 => Role::Server,
            _ => Role::Client,
        }
    }
}

/// Bounded table of live connections.
pub struct ConnTable {
    map: SockMap<ConnInfo>,
    cap: usize,
    evicted: u64,
}

impl ConnTable {
    pub fn new(cap: usize) -> Self {
        Self {
            map: SockMap::with_capacity_and_hasher(cap.min(4096), Default::default()),
            cap: cap.max(16),
            evicted: 0,
        }
    }

    pub fn get(&self, sk: u64) -> Option<&ConnInfo> {
        self.map.get(&sk)
    }

    /// The entry for `sk`, created if new (evicting the least recently seen
    /// eighth of the table when full).
    pub fn entry(&mut self, sk: u64, now_ns: u64) -> &mut ConnInfo {
        if !self.map.contains_key(&sk) && self.map.len() >= self.cap {
            self.evict(now_ns);
        }
        let e = self.map.entry(sk).or_insert_with(|| ConnInfo::new(now_ns));
        e.last_seen_ns = e.last_seen_ns.max(now_ns);
        e
    }

    pub fn entry_if_present(&mut self, sk: u64) -> Option<&mut ConnInfo> {
        self.map.get_mut(&sk)
    }

    /// Remove the entry unless it was first seen after `ts_ns`: a CLOSE that
    /// reaches us late must not end a newer socket at the same address.
    pub fn remove_if_older(&mut self, sk: u64, ts_ns: u64) -> Option<ConnInfo> {
        if self.map.get(&sk).is_some_and(|c| c.first_seen_ns > ts_ns) {
            return None;
        }
        self.map.remove(&sk)
    }

    pub fn remove(&mut self, sk: u64) -> Option<ConnInfo> {
        self.map.remove(&sk)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries dropped because the table was full (their sockets are still
    /// alive; later events re-create them with less context).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn evict(&mut self, _now_ns: u64) {
        // Amortised O(1): one O(n) pass frees an eighth of the table.
        let mut ages: Vec<u64> = self.map.values().map(|c| c.last_seen_ns).collect();
        let k = (self.map.len() / 8).max(1);
        let (_, cutoff, _) = ages.select_nth_unstable(k - 1);
        let cutoff = *cutoff;
        let before = self.map.len();
        let mut budget = k;
        self.map.retain(|_, c| {
            if budget > 0 && c.last_seen_ns <= cutoff {
                budget -= 1;
                false
            } else {
                true
            }
        });
        self.evicted += (before - self.map.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_stays_bounded_and_evicts_oldest() {
        let mut t = ConnTable::new(64);
        for sk in 0..1000u64 {
            t.entry(sk, sk);
        }
        assert!(t.len() <= 64);
        assert!(t.evicted() >= 936);
        // The newest entry survives.
        assert!(t.get(999).is_some());
        assert!(t.get(0).is_none());
    }

    #[test]
    fn role_guess_uses_ephemeral_ports() {
        let mut c = ConnInfo::new(0);
        c.local = Some("127.0.0.1:8080".parse().unwrap());
        c.remote = Some("127.0.0.1:45000".parse().unwrap());
        assert_eq!(c.role_or_guess(), Role::Server);
        c.role = Some(Role::Client);
        assert_eq!(c.role_or_guess(), Role::Client);
    }
}
