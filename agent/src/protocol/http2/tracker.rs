//! The table of HTTP/2 connections and the entry points the pipeline calls.
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::conn::{Ctx, H2Conn, Limits, PREFACE};
use super::{DataChunk, Http2Counters};
use crate::protocol::ProtocolTracker;
use crate::protocol::http1::{ConnIdHasher, HttpConfig};
use crate::request::HttpRequest;

/// HPACK table bytes kept per direction: 16 × the protocol's default 4096, so
/// peers that raise SETTINGS_HEADER_TABLE_SIZE still decode, while a
/// connection's tables stay bounded (beyond it, old entries read as unknown).
const MAX_TABLE: usize = 64 * 1024;

type ConnMap = HashMap<u64, H2Conn, BuildHasherDefault<ConnIdHasher>>;

/// Reassembles HTTP/2 streams (and gRPC calls) from socket data events.
pub struct Http2Tracker {
    limits: Limits,
    max_connections: usize,
    idle_timeout_ns: u64,
    conns: ConnMap,
    counters: Http2Counters,
}

/// Does a stream start with the client preface? At least its first 8 bytes
/// (`PRI * HT`, never an HTTP/1 start) and nothing that disagrees with it.
pub fn starts_with_preface(payload: &[u8]) -> bool {
    let n = payload.len().min(PREFACE.len());
    n >= 8 && payload[..n] == PREFACE[..n]
}

impl Http2Tracker {
    pub fn new(cfg: &HttpConfig) -> Self {
        Self {
            limits: Limits {
                max_streams: cfg.max_streams_per_connection.max(1),
                max_block: cfg.max_head_bytes,
                max_table: MAX_TABLE,
            },
            max_connections: cfg.max_connections.max(1),
            idle_timeout_ns: u64::try_from(cfg.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            conns: ConnMap::default(),
            counters: Http2Counters::default(),
        }
    }

    pub fn counters(&self) -> &Http2Counters {
        &self.counters
    }

    /// Take the chunk if its connection speaks HTTP/2 (known, or starting
    /// with the preface now); `false` leaves it to the HTTP/1 tracker.
    pub fn claim(&mut self, chunk: &DataChunk<'_>, out: &mut Vec<HttpRequest>) -> bool {
        if !self.conns.contains_key(&chunk.conn_id) {
            if !starts_with_preface(chunk.payload) {
                return false;
            }
            if self.conns.len() >= self.max_connections {
                self.evict_oldest(out);
            }
            self.counters.connections += 1;
            self.conns.insert(
                chunk.conn_id,
                H2Conn::new(chunk.conn_id, chunk.direction, chunk.ts_ns, self.limits),
            );
        }
        self.feed(chunk, out);
        true
    }

    /// A segment of the latest syscall on a connection (`DATA_FLAG_SEGMENT`):
    /// `payload` lies `offset` bytes into that syscall's bytes.
    pub fn on_segment(
        &mut self,
        conn_id: u64,
        direction: super::Direction,
        offset: u32,
        payload: &[u8],
        out: &mut Vec<HttpRequest>,
    ) {
        if let Some(c) = self.conns.get_mut(&conn_id) {
            let mut ctx = Ctx {
                out,
                counters: &mut self.counters,
            };
            c.on_segment(direction, u64::from(offset), payload, &mut ctx);
        }
    }

    /// Follow a connection whose start the agent did not see (tests, and a
    /// kernel that recognises HTTP/2 mid-stream): its tables are unknown.
    pub fn join(&mut self, conn_id: u64, request_dir: super::Direction, ts_ns: u64) {
        self.conns
            .entry(conn_id)
            .or_insert_with(|| H2Conn::joined(conn_id, request_dir, ts_ns, self.limits));
    }

    fn feed(&mut self, chunk: &DataChunk<'_>, out: &mut Vec<HttpRequest>) {
        let Some(c) = self.conns.get_mut(&chunk.conn_id) else {
            return;
        };
        if chunk.len == 0 && chunk.payload.is_empty() {
            return; // end of file: the close event ends the connection
        }
        let mut ctx = Ctx {
            out,
            counters: &mut self.counters,
        };
        c.on_data(
            chunk.direction,
            chunk.ts_ns,
            u64::from(chunk.len),
            chunk.payload,
            &mut ctx,
        );
    }

    fn drop_conn(&mut self, id: u64, end_ns: Option<u64>, out: &mut Vec<HttpRequest>) {
        if let Some(c) = self.conns.remove(&id) {
            let end = end_ns.unwrap_or(c.last_ts);
            c.finish(
                end,
                &mut Ctx {
                    out,
                    counters: &mut self.counters,
                },
            );
        }
    }

    /// Drop the least recently active 1/16 of the connections.
    fn evict_oldest(&mut self, out: &mut Vec<HttpRequest>) {
        let mut all: Vec<(u64, u64)> = self.conns.iter().map(|(id, c)| (c.last_ts, *id)).collect();
        let k = (all.len() / 16).max(1).min(all.len());
        if k == 0 {
            return;
        }
        all.select_nth_unstable(k - 1);
        for &(_, id) in &all[..k] {
            self.counters.evicted_connections += 1;
            self.drop_conn(id, None, out);
        }
    }
}

impl ProtocolTracker for Http2Tracker {
    fn on_data(&mut self, chunk: &DataChunk<'_>, out: &mut Vec<HttpRequest>) {
        self.claim(chunk, out);
    }

    fn on_close(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<HttpRequest>) {
        if self.conns.get(&conn_id).is_some_and(|c| c.first_ts > ts_ns) {
            return; // a late close of the socket that had this address before
        }
        self.drop_conn(conn_id, Some(ts_ns), out);
    }

    fn expire(&mut self, now_ns: u64, out: &mut Vec<HttpRequest>) {
        let Some(cutoff) = now_ns.checked_sub(self.idle_timeout_ns) else {
            return;
        };
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_ts <= cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.counters.expired_connections += 1;
            self.drop_conn(id, None, out);
        }
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }
}
