//! One HTTP/2 connection: both directions' frames and HPACK tables, the
//! stream table, and request/response pairing per stream id.
use std::collections::HashMap;

use super::frame::{Frame, FrameHead, FrameReader, HEADER_LEN, flag, header_block, kind};
use super::grpc::{self, GrpcCall};
use super::hpack::HpackDecoder;
use super::{Direction, Http2Counters};
use crate::protocol::http1::head::{Framing, request_header};
use crate::request::{HttpRequest, RequestHeaders, Side};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Per-connection bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open streams tracked per connection; more are counted, not tracked.
    pub max_streams: usize,
    /// Bytes of one header block (HEADERS + CONTINUATION) kept.
    pub max_block: usize,
    /// HPACK dynamic-table bytes kept per direction.
    pub max_table: usize,
}

/// Where completed requests and counts go.
pub struct Ctx<'a> {
    pub out: &'a mut Vec<HttpRequest>,
    pub counters: &'a mut Http2Counters,
}

struct Stream {
    req: HttpRequest,
    /// The response's (non-informational) head was seen; later HEADERS are trailers.
    response_head: bool,
}

/// A header block waiting for its CONTINUATION frames.
struct Pending {
    head: FrameHead,
    first_ts: u64,
    block: Vec<u8>,
    lost: bool,
}

/// What one header block said that pairing needs.
#[derive(Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    grpc: bool,
    grpc_status: Option<u8>,
    grpc_timeout: Option<u64>,
    headers: RequestHeaders,
}

/// Longest `:path` or `:method` kept (a longer one is cut: a route is bounded later too).
const MAX_PSEUDO: usize = 2048;

impl Fields {
    fn take(&mut self, name: &[u8], value: &[u8], is_request: bool) {
        let text = |v: &[u8]| String::from_utf8_lossy(&v[..v.len().min(MAX_PSEUDO)]).into_owned();
        match name {
            b":method" => self.method = Some(text(value)),
            b":path" => self.path = Some(text(value)),
            b":status" => {
                self.status = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .filter(|s| (100..1000).contains(s))
            }
            b"content-type" => self.grpc |= grpc::is_grpc_content_type(value),
            b"grpc-status" => self.grpc_status = Some(grpc::parse_status(value)),
            b"grpc-timeout" => self.grpc_timeout = grpc::parse_timeout(value),
            // Trace context, gray tag, host: as HTTP/1 request headers are read.
            _ if is_request && !name.starts_with(b":") => {
                request_header(&mut self.headers, &mut Framing::default(), name, value)
            }
            b":authority" if is_request => {
                request_header(&mut self.headers, &mut Framing::default(), b"host", value)
            }
            _ => {}
        }
    }
}

/// Everything but the frame readers (which call into it).
struct State {
    conn_id: u64,
    /// The client's direction: its bytes are requests.
    request_dir: Direction,
    side: Side,
    hpack: [HpackDecoder; 2],
    pending: [Option<Pending>; 2],
    streams: HashMap<u32, Stream>,
    limits: Limits,
}

/// Where a direction stands in its latest syscall's bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Syscall {
    len: u64,
    /// Bytes of it accounted for (captured or skipped).
    pos: u64,
    ts: u64,
}

pub struct H2Conn {
    readers: [FrameReader; 2],
    sys: [Syscall; 2],
    /// Preface bytes still expected from the client.
    preface_left: usize,
    state: State,
    pub first_ts: u64,
    pub last_ts: u64,
}

fn idx(d: Direction) -> usize {
    d as usize
}

impl H2Conn {
    /// A connection whose client preface was seen moving in `request_dir`.
    pub fn new(conn_id: u64, request_dir: Direction, ts: u64, limits: Limits) -> Self {
        let side = match request_dir {
            Direction::Ingress => Side::Server,
            Direction::Egress => Side::Client,
        };
        Self {
            readers: [
                FrameReader::new(limits.max_block),
                FrameReader::new(limits.max_block),
            ],
            sys: [Syscall::default(); 2],
            preface_left: PREFACE.len(),
            state: State {
                conn_id,
                request_dir,
                side,
                hpack: [
                    HpackDecoder::new(limits.max_table),
                    HpackDecoder::new(limits.max_table),
                ],
                pending: [None, None],
                streams: HashMap::new(),
                limits,
            },
            first_ts: ts,
            last_ts: ts,
        }
    }

    /// A connection joined after its start (the tables are unknown): the
    /// side must come from elsewhere (the socket table).
    pub fn joined(conn_id: u64, request_dir: Direction, ts: u64, limits: Limits) -> Self {
        let mut c = Self::new(conn_id, request_dir, ts, limits);
        c.preface_left = 0;
        c
    }

    pub fn desynced(&self) -> bool {
        self.readers.iter().any(FrameReader::desynced)
    }

    /// A syscall moved `len` bytes at `ts` in `dir`; its first event holds
    /// the first `payload.len()` of them. Segments of the same syscall may
    /// follow ([`H2Conn::on_segment`]); the bytes no event holds are holes.
    pub fn on_data(
        &mut self,
        dir: Direction,
        ts: u64,
        len: u64,
        mut payload: &[u8],
        ctx: &mut Ctx<'_>,
    ) {
        self.end_syscall(dir, ctx);
        self.last_ts = ts;
        let len = len.max(payload.len() as u64);
        self.sys[idx(dir)] = Syscall { len, pos: 0, ts };
        if dir == self.state.request_dir && self.preface_left > 0 {
            let n = self.preface_left.min(payload.len());
            payload = &payload[n..];
            self.preface_left -= n;
            let mut pos = n as u64;
            if self.preface_left > 0 {
                // The rest of the preface was not captured: skip it as bytes.
                let k = (self.preface_left as u64).min(len - pos);
                self.preface_left -= k as usize;
                pos += k;
            }
            self.sys[idx(dir)].pos = pos;
        }
        self.take(dir, payload, ctx);
    }

    /// Bytes of the current syscall in `dir` starting `offset` bytes in (a
    /// segment the kernel's frame walk sent: headers and read payloads).
    pub fn on_segment(&mut self, dir: Direction, offset: u64, payload: &[u8], ctx: &mut Ctx<'_>) {
        let sys = self.sys[idx(dir)];
        if offset < sys.pos || offset + payload.len() as u64 > sys.len {
            // Not where this syscall's bytes stand (events out of order).
            ctx.counters.misplaced_segments += 1;
            return;
        }
        self.hole(dir, offset - sys.pos, ctx);
        self.take(dir, payload, ctx);
    }

    /// Captured bytes at the current position of `dir`'s syscall; then skip
    /// what the reader would not read anyway, so a stream ending with a DATA
    /// frame ends with the syscall that wrote its last byte.
    fn take(&mut self, dir: Direction, payload: &[u8], ctx: &mut Ctx<'_>) {
        let sys = self.sys[idx(dir)];
        self.with_reader(dir, ctx, |r, f| r.feed(payload, sys.ts, f));
        let pos = sys.pos + payload.len() as u64;
        self.sys[idx(dir)].pos = pos;
        let unread = u64::from(self.readers[idx(dir)].unread_payload());
        let skip = unread.min(sys.len.saturating_sub(pos));
        self.hole(dir, skip, ctx);
    }

    fn hole(&mut self, dir: Direction, n: u64, ctx: &mut Ctx<'_>) {
        if n == 0 {
            return;
        }
        let ts = self.sys[idx(dir)].ts;
        self.sys[idx(dir)].pos += n;
        self.with_reader(dir, ctx, |r, f| r.skip(n, ts, f));
    }

    /// The rest of `dir`'s last syscall was not captured: a hole.
    fn end_syscall(&mut self, dir: Direction, ctx: &mut Ctx<'_>) {
        let sys = self.sys[idx(dir)];
        self.hole(dir, sys.len.saturating_sub(sys.pos), ctx);
    }

    fn with_reader(
        &mut self,
        dir: Direction,
        ctx: &mut Ctx<'_>,
        go: impl FnOnce(&mut FrameReader, &mut dyn FnMut(Frame<'_>)),
    ) {
        let was_desynced = self.desynced();
        let state = &mut self.state;
        let ts_end = self.sys[idx(dir)].ts;
        let reader = &mut self.readers[idx(dir)];
        let mut on_frame = |f: Frame<'_>| state.on_frame(dir, &f, ts_end, ctx);
        go(reader, &mut on_frame);
        if self.desynced() && !was_desynced {
            ctx.counters.desynced_connections += 1;
            // Pairing is over: what is open ends here, incomplete.
            self.state.drain(ts_end, ctx);
        }
    }

    /// The connection ended at `ts`: open streams are emitted, incomplete.
    pub fn finish(mut self, ts: u64, ctx: &mut Ctx<'_>) {
        for dir in [Direction::Ingress, Direction::Egress] {
            self.end_syscall(dir, ctx);
        }
        self.state.drain(ts, ctx);
    }
}

impl State {
    fn on_frame(&mut self, dir: Direction, f: &Frame<'_>, ts: u64, ctx: &mut Ctx<'_>) {
        let h = f.head;
        let d = idx(dir);
        if let Some(s) = self.streams.get_mut(&h.stream) {
            let bytes = u64::from(h.len) + HEADER_LEN as u64;
            if dir == self.request_dir {
                s.req.request_bytes += bytes;
            } else {
                s.req.response_bytes += bytes;
            }
        }
        if self.pending[d].is_some() && h.kind != kind::CONTINUATION {
            // A header block must be continued by CONTINUATION frames only.
            ctx.counters.protocol_errors += 1;
            self.pending[d] = None;
            self.hpack[d].reset();
        }
        match h.kind {
            kind::HEADERS | kind::PUSH_PROMISE => {
                let block = header_block(&h, f.payload);
                let lost = f.lost || block.is_none();
                let block = block.unwrap_or_default();
                if h.flags & flag::END_HEADERS != 0 {
                    self.block_done(dir, h, f.first_ts, block, lost, ts, ctx);
                } else {
                    self.pending[d] = Some(Pending {
                        head: h,
                        first_ts: f.first_ts,
                        block: block.to_vec(),
                        lost,
                    });
                }
            }
            kind::CONTINUATION => {
                let Some(mut p) = self.pending[d].take() else {
                    ctx.counters.protocol_errors += 1;
                    return;
                };
                if p.head.stream != h.stream {
                    ctx.counters.protocol_errors += 1;
                    self.hpack[d].reset();
                    return;
                }
                if f.lost || p.block.len() + f.payload.len() > self.limits.max_block {
                    p.lost = true;
                    p.block = Vec::new();
                } else if !p.lost {
                    p.block.extend_from_slice(f.payload);
                }
                if h.flags & flag::END_HEADERS != 0 {
                    self.block_done(dir, p.head, p.first_ts, &p.block, p.lost, ts, ctx);
                } else {
                    self.pending[d] = Some(p);
                }
            }
            kind::DATA if h.flags & flag::END_STREAM != 0 && dir != self.request_dir => {
                self.finish_stream(h.stream, ts, false, ctx);
            }
            kind::RST_STREAM => {
                if let Some(mut s) = self.streams.remove(&h.stream) {
                    ctx.counters.reset_streams += 1;
                    if let Some(g) = &mut s.req.grpc
                        && dir == self.request_dir
                    {
                        // The client gave up on the call.
                        g.status = Some(1);
                    }
                    emit(s, ts, true, ctx);
                }
            }
            kind::GOAWAY if dir != self.request_dir && f.payload.len() >= 4 => {
                // Streams above the last one the server processed never ran.
                let p = f.payload;
                let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                let before = self.streams.len();
                self.streams.retain(|&id, _| id <= last);
                ctx.counters.goaway_dropped += (before - self.streams.len()) as u64;
            }
            // SETTINGS, PING, PRIORITY, WINDOW_UPDATE and client GOAWAY change
            // no stream's outcome: the table size travels in the header block.
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn block_done(
        &mut self,
        dir: Direction,
        h: FrameHead,
        first_ts: u64,
        block: &[u8],
        lost: bool,
        ts: u64,
        ctx: &mut Ctx<'_>,
    ) {
        let d = idx(dir);
        let is_request = dir == self.request_dir;
        let mut fields = Fields::default();
        if lost {
            // Its insertions are unknown: the table restarts (see hpack.rs).
            ctx.counters.lost_header_blocks += 1;
            self.hpack[d].reset();
        } else {
            let o = self.hpack[d].decode(block, |n, v| fields.take(n, v, is_request));
            ctx.counters.hpack_unknown_fields += u64::from(o.unknown);
            ctx.counters.hpack_malformed_fields += u64::from(o.malformed);
        }
        if h.kind == kind::PUSH_PROMISE {
            // Decoded for the table's sake; pushed responses are not requests.
            ctx.counters.pushes += 1;
            return;
        }
        let end_stream = h.flags & flag::END_STREAM != 0;
        if is_request {
            if self.streams.contains_key(&h.stream) {
                return; // request trailers
            }
            let (Some(method), Some(path)) = (fields.method, fields.path) else {
                // Never invent a route: a request whose path or method could
                // not be decoded is counted, not measured.
                ctx.counters.undecodable_requests += 1;
                return;
            };
            if self.streams.len() >= self.limits.max_streams {
                ctx.counters.stream_overflows += 1;
                return;
            }
            let mut req = HttpRequest::synthetic(self.side, &method, &path, 0, first_ts, first_ts)
                .with_conn_id(self.conn_id);
            req.headers = fields.headers;
            req.http2 = true;
            if fields.grpc {
                req.grpc = Some(GrpcCall {
                    status: None,
                    timeout_ns: fields.grpc_timeout,
                });
            }
            req.request_bytes = u64::from(h.len) + HEADER_LEN as u64;
            self.streams.insert(
                h.stream,
                Stream {
                    req,
                    response_head: false,
                },
            );
            return;
        }
        let Some(s) = self.streams.get_mut(&h.stream) else {
            return;
        };
        if !s.response_head {
            match fields.status {
                // 1xx: informational, the final head follows.
                Some(st) if st < 200 => return,
                Some(st) => s.req.status = st,
                None => {}
            }
            s.response_head = true;
        }
        if let (Some(g), Some(code)) = (&mut s.req.grpc, fields.grpc_status) {
            g.status = Some(code);
        }
        if end_stream {
            self.finish_stream(h.stream, ts, false, ctx);
        }
    }

    fn finish_stream(&mut self, id: u32, ts: u64, incomplete: bool, ctx: &mut Ctx<'_>) {
        if let Some(s) = self.streams.remove(&id) {
            emit(s, ts, incomplete, ctx);
        }
    }

    fn drain(&mut self, ts: u64, ctx: &mut Ctx<'_>) {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.finish_stream(id, ts, true, ctx);
        }
    }
}

fn emit(s: Stream, ts: u64, incomplete: bool, ctx: &mut Ctx<'_>) {
    let mut req = s.req;
    req.end_ns = ts.max(req.start_ns);
    req.incomplete = incomplete || !s.response_head;
    if req.incomplete {
        ctx.counters.incomplete_exchanges += 1;
    } else {
        ctx.counters.exchanges += 1;
    }
    ctx.out.push(req);
}
