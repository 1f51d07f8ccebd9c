//! The table of connections and the entry points the pipeline calls.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::exchange::{Conn, Ctx};
use super::stream::Limits;
use super::{DataChunk, HttpConfig, HttpCounters};
use crate::protocol::ProtocolTracker;
use crate::request::HttpRequest;

/// Hasher for socket pointers: aligned, so low bits are mixed in by a folded multiply.
#[derive(Default)]
pub(crate) struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        let m = u128::from(x ^ self.0) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

type ConnMap = HashMap<u64, Conn, BuildHasherDefault<ConnIdHasher>>;

/// Reassembles HTTP/1.x exchanges from socket data events.
pub struct Http1Tracker {
    limits: Limits,
    max_connections: usize,
    max_pipelined: usize,
    idle_timeout_ns: u64,
    conns: ConnMap,
    counters: HttpCounters,
    scratch: Vec<u8>,
    sweep: Vec<(u64, u64)>,
}

impl Http1Tracker {
    pub fn new(cfg: &HttpConfig) -> Self {
        Self {
            limits: Limits {
                max_head_bytes: cfg.max_head_bytes,
                budget: super::budget::HeadBudget::new(cfg.max_head_buffer_bytes),
            },
            max_connections: cfg.max_connections.max(1),
            max_pipelined: cfg.max_pipelined.max(1),
            idle_timeout_ns: u64::try_from(cfg.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            conns: ConnMap::default(),
            counters: HttpCounters::default(),
            scratch: Vec::new(),
            sweep: Vec::new(),
        }
    }

    pub fn counters(&self) -> &HttpCounters {
        &self.counters
    }

    /// Bytes the head reassembly buffers hold now (charged capacity).
    pub fn head_buffer_bytes(&self) -> usize {
        self.limits.budget.used()
    }

    /// Make room: drop the least recently active 1/16 of connections, so the
    /// O(n) selection is paid once per n/16 new connections.
    fn evict_oldest(&mut self, out: &mut Vec<HttpRequest>) {
        let mut sweep = std::mem::take(&mut self.sweep);
        sweep.clear();
        sweep.extend(self.conns.iter().map(|(id, c)| (c.last_ts, *id)));
        let k = (sweep.len() / 16).max(1).min(sweep.len());
        if k > 0 {
            sweep.select_nth_unstable(k - 1);
            for &(_, id) in &sweep[..k] {
                self.counters.evicted_connections += 1;
                self.drop_conn(id, None, out);
            }
        }
        self.sweep = sweep;
    }

    fn drop_conn(&mut self, id: u64, end_ns: Option<u64>, out: &mut Vec<HttpRequest>) {
        if let Some(conn) = self.conns.remove(&id) {
            if !conn.is_live() {
                return;
            }
            let end = end_ns.unwrap_or(conn.last_ts);
            let mut ctx = Ctx {
                out,
                counters: &mut self.counters,
                max_pipelined: self.max_pipelined,
            };
            conn.finish(end, &mut self.scratch, &mut ctx);
        }
    }
}

impl ProtocolTracker for Http1Tracker {
    /// Connections currently tracked (including ones judged not HTTP).
    fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Feed one data event; completed exchanges are appended to `out`.
    fn on_data(&mut self, chunk: &DataChunk<'_>, out: &mut Vec<HttpRequest>) {
        self.counters.chunks += 1;
        if chunk.len == 0 && chunk.payload.is_empty() {
            // A read of 0 bytes is end-of-file, not data: it must not move a
            // response's last-byte time. The close event ends the connection.
            return;
        }
        let mut ctx = Ctx {
            out,
            counters: &mut self.counters,
            max_pipelined: self.max_pipelined,
        };
        if let Some(conn) = self.conns.get_mut(&chunk.conn_id) {
            conn.on_data(chunk, &self.limits, &mut self.scratch, &mut ctx);
            self.counters.head_budget_exhausted = self.limits.budget.exhausted();
            return;
        }
        if chunk.payload.is_empty() {
            // Body bytes of a connection we do not follow: nothing to learn.
            ctx.counters.untracked_chunks += 1;
            return;
        }
        if self.conns.len() >= self.max_connections {
            self.evict_oldest(out);
        }
        let mut ctx = Ctx {
            out,
            counters: &mut self.counters,
            max_pipelined: self.max_pipelined,
        };
        self.conns
            .entry(chunk.conn_id)
            .or_insert_with(|| Conn::new(chunk.conn_id, chunk.ts_ns, self.limits.budget.clone()))
            .on_data(chunk, &self.limits, &mut self.scratch, &mut ctx);
        self.counters.head_budget_exhausted = self.limits.budget.exhausted();
    }

    /// The socket was closed at `ts_ns`: emit what it holds and forget it.
    fn on_close(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<HttpRequest>) {
        // Events of different CPUs reach the ring buffer slightly out of
        // order: a late CLOSE of the previous socket at this address must not
        // end the new connection's exchanges.
        if self.conns.get(&conn_id).is_some_and(|c| c.first_ts > ts_ns) {
            self.counters.stale_closes += 1;
            return;
        }
        if let Some(conn) = self.conns.remove(&conn_id) {
            let mut ctx = Ctx {
                out,
                counters: &mut self.counters,
                max_pipelined: self.max_pipelined,
            };
            conn.finish(ts_ns, &mut self.scratch, &mut ctx);
        }
    }

    /// Forget connections silent for `idle_timeout` as of `now_ns`
    /// (CLOCK_MONOTONIC, the clock of `ts_ns`), emitting their exchanges.
    fn expire(&mut self, now_ns: u64, out: &mut Vec<HttpRequest>) {
        let Some(cutoff) = now_ns.checked_sub(self.idle_timeout_ns) else {
            return;
        };
        let mut sweep = std::mem::take(&mut self.sweep);
        sweep.clear();
        sweep.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.last_ts <= cutoff)
                .map(|(id, c)| (c.last_ts, *id)),
        );
        for &(_, id) in &sweep {
            self.counters.expired_connections += 1;
            self.drop_conn(id, None, out);
        }
        self.sweep = sweep;
    }
}
