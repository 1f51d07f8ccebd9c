//! One TCP connection: its two directions and the pairing of requests with
//! responses (FIFO, so pipelining works), on the server or the client side.
use std::collections::VecDeque;

use agent_common::Direction;

use super::head::{Framing, Head, MsgKind, is_definite_start, parse_truncated};
use super::stream::{Body, DirParser, HeadSeen, Limits, Plan, Sink};
use super::{DataChunk, HttpCounters};
use crate::request::{HttpRequest, Side};

/// Everything a connection needs from its tracker while handling one event.
pub(crate) struct Ctx<'a> {
    pub out: &'a mut Vec<HttpRequest>,
    pub counters: &'a mut HttpCounters,
    pub max_pipelined: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnState {
    Tracking,
    /// Not HTTP/1.x: kept only so it is counted once and skipped cheaply.
    NotHttp,
    /// Upgraded (101) or tunnelled (CONNECT): no longer HTTP/1.x.
    Tunnel,
    /// Requests were hidden beyond the capture: the responses to the
    /// requests already seen are still paired, then the connection desyncs.
    Draining,
    /// A message could not be delimited while others were in flight, so
    /// FIFO pairing would be wrong: ignored until closed or idle.
    Desynced,
}

/// A request whose response has not ended yet.
#[derive(Debug)]
struct Exchange {
    seq: u64,
    req: HttpRequest,
    resp_started: bool,
    /// Timestamp of the last response byte seen so far.
    resp_last_ts: u64,
}

/// Pairing state shared by the two directions.
#[derive(Debug)]
struct Pairing {
    conn_id: u64,
    role: Option<Side>,
    state: ConnState,
    pending: VecDeque<Exchange>,
    next_seq: u64,
    /// The exchange whose request is being read/written.
    cur_req: Option<u64>,
    /// The response being read/written belongs to `pending.front()`.
    resp_attached: bool,
    /// The response being read/written is a 1xx interim response.
    resp_interim: bool,
}

impl Pairing {
    /// Still pairing exchanges (possibly only draining the queue).
    fn is_live(&self) -> bool {
        matches!(self.state, ConnState::Tracking | ConnState::Draining)
    }
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) last_ts: u64,
    /// First event of this connection: a CLOSE stamped earlier belongs to a
    /// previous socket at the same (reused) kernel address.
    pub(crate) first_ts: u64,
    ingress: DirParser,
    egress: DirParser,
    pairing: Pairing,
}

fn emit(ex: Exchange, end_ns: u64, incomplete: bool, ctx: &mut Ctx<'_>) {
    let mut req = ex.req;
    req.end_ns = end_ns.max(req.start_ns);
    req.incomplete = incomplete;
    if incomplete {
        ctx.counters.incomplete_exchanges += 1;
    } else {
        ctx.counters.exchanges += 1;
    }
    ctx.out.push(req);
}

fn request_body(f: &Framing) -> Body {
    if f.transfer_encoding {
        if f.chunked {
            Body::Chunked(Default::default())
        } else {
            Body::Unknown { chunked: false }
        }
    } else if f.bad_length {
        Body::Unknown { chunked: false }
    } else {
        match f.content_length {
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    }
}

fn response_body(head_request: bool, status: u16, f: &Framing) -> Body {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Body::None
    } else if f.transfer_encoding {
        if f.chunked {
            Body::Chunked(Default::default())
        } else {
            Body::UntilClose
        }
    } else if f.bad_length {
        Body::UntilClose
    } else {
        match f.content_length {
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    }
}

/// The sink one direction's parser reports to.
struct ConnSink<'p, 'c, 'x> {
    dir: Direction,
    pairing: &'p mut Pairing,
    other: &'p mut DirParser,
    ctx: &'c mut Ctx<'x>,
}

impl Sink for ConnSink<'_, '_, '_> {
    fn message_start(&mut self, expect: Option<MsgKind>, _ts: u64) {
        // A new request means a response whose end framing could not show is over.
        if expect == Some(MsgKind::Request)
            && self.pairing.resp_attached
            && let Some((MsgKind::Response, last_ts)) = self.other.open_unframed()
            && let Some(ex) = self.pairing.pending.pop_front()
        {
            self.pairing.resp_attached = false;
            self.ctx.counters.unframed_responses += 1;
            emit(ex, last_ts, false, self.ctx);
        }
    }

    fn head(&mut self, head: Head, seen: HeadSeen) -> Plan {
        let HeadSeen {
            start_ts,
            ts,
            bytes: head_bytes,
            truncated,
        } = seen;
        let p = &mut *self.pairing;
        if truncated {
            self.ctx.counters.truncated_heads += 1;
        }
        let kind = head.kind();
        let role = *p.role.get_or_insert(match (self.dir, kind) {
            (Direction::Ingress, MsgKind::Request) | (Direction::Egress, MsgKind::Response) => {
                Side::Server
            }
            _ => Side::Client,
        });
        self.other.expect = Some(kind.opposite());
        match head {
            Head::Request(r) => {
                if p.pending.len() >= self.ctx.max_pipelined
                    && let Some(ex) = p.pending.pop_front()
                {
                    self.ctx.counters.pipeline_overflows += 1;
                    p.resp_attached = false;
                    emit(ex, start_ts, true, self.ctx);
                }
                let body = request_body(&r.framing);
                let mut req = HttpRequest::synthetic(role, "", "", 0, start_ts, start_ts)
                    .with_conn_id(p.conn_id);
                req.method = r.method;
                req.target = r.target;
                req.version_minor = r.version_minor;
                req.headers = r.headers;
                req.request_bytes = head_bytes;
                let seq = p.next_seq;
                p.next_seq += 1;
                p.pending.push_back(Exchange {
                    seq,
                    req,
                    resp_started: false,
                    resp_last_ts: 0,
                });
                p.cur_req = Some(seq);
                Plan::Body(body)
            }
            Head::Response(r) => {
                let front = p.pending.front_mut();
                let upgrade = r.status == 101;
                if (100..200).contains(&r.status) && !upgrade {
                    if let Some(ex) = front {
                        ex.req.response_bytes += head_bytes;
                        ex.resp_last_ts = ts;
                    }
                    p.resp_interim = true;
                    return Plan::Body(Body::None);
                }
                p.resp_interim = false;
                let Some(ex) = front else {
                    self.ctx.counters.unmatched_responses += 1;
                    p.resp_attached = false;
                    if upgrade {
                        p.state = ConnState::Tunnel;
                        return Plan::Tunnel;
                    }
                    return Plan::Body(response_body(false, r.status, &r.framing));
                };
                ex.req.status = r.status;
                ex.req.response_bytes += head_bytes;
                ex.resp_started = true;
                ex.resp_last_ts = ts;
                let tunnel =
                    upgrade || (ex.req.method == "CONNECT" && (200..300).contains(&r.status));
                if tunnel {
                    let ex = p.pending.pop_front().expect("front exists");
                    p.resp_attached = false;
                    p.state = ConnState::Tunnel;
                    self.ctx.counters.upgraded_connections += 1;
                    emit(ex, ts, false, self.ctx);
                    return Plan::Tunnel;
                }
                p.resp_attached = true;
                Plan::Body(response_body(ex.req.method == "HEAD", r.status, &r.framing))
            }
        }
    }

    fn body_bytes(&mut self, kind: MsgKind, n: u64, ts: u64) {
        let p = &mut *self.pairing;
        match kind {
            MsgKind::Request => {
                if let Some(seq) = p.cur_req
                    && let Some(ex) = p.pending.iter_mut().rev().find(|e| e.seq == seq)
                {
                    ex.req.request_bytes += n;
                }
            }
            MsgKind::Response => {
                if p.resp_attached
                    && let Some(ex) = p.pending.front_mut()
                {
                    ex.req.response_bytes += n;
                    ex.resp_last_ts = ts;
                }
            }
        }
    }

    fn message_end(&mut self, kind: MsgKind, end_ts: u64, framed: bool) {
        let p = &mut *self.pairing;
        match kind {
            MsgKind::Request => p.cur_req = None,
            MsgKind::Response => {
                if std::mem::take(&mut p.resp_interim) {
                    return;
                }
                if std::mem::take(&mut p.resp_attached)
                    && let Some(ex) = p.pending.pop_front()
                {
                    if !framed {
                        self.ctx.counters.unframed_responses += 1;
                    }
                    emit(ex, end_ts, false, self.ctx);
                }
            }
        }
    }

    fn invalid(&mut self, first: bool) {
        if first {
            self.pairing.state = ConnState::NotHttp;
            self.ctx.counters.non_http_connections += 1;
        } else {
            self.ctx.counters.parse_errors += 1;
        }
    }

    fn framing_lost(&mut self, kind: MsgKind, message_unseen: bool, ts: u64) {
        self.ctx.counters.framing_lost += 1;
        // Pairing is FIFO: an unseen message, or a response whose end is a
        // guess while more requests wait, would shift every later pair.
        let p = &mut *self.pairing;
        if message_unseen && kind == MsgKind::Request {
            // Responses to the requests already queued come first (FIFO).
            self.ctx.counters.desynced_connections += 1;
            p.cur_req = None;
            p.state = ConnState::Draining;
        } else if message_unseen || (kind == MsgKind::Response && p.pending.len() > 1) {
            if p.state != ConnState::Draining {
                self.ctx.counters.desynced_connections += 1;
            }
            p.state = ConnState::Desynced;
            p.resp_attached = false;
            p.cur_req = None;
            while let Some(ex) = p.pending.pop_front() {
                emit(ex, ts, true, self.ctx);
            }
        }
    }
}

impl Conn {
    pub(crate) fn new(
        conn_id: u64,
        ts: u64,
        budget: std::sync::Arc<super::budget::HeadBudget>,
    ) -> Self {
        Self {
            last_ts: ts,
            first_ts: ts,
            ingress: DirParser::new(budget.clone()),
            egress: DirParser::new(budget),
            pairing: Pairing {
                conn_id,
                role: None,
                state: ConnState::Tracking,
                pending: VecDeque::new(),
                next_seq: 0,
                cur_req: None,
                resp_attached: false,
                resp_interim: false,
            },
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.pairing.is_live()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_data(
        &mut self,
        chunk: &DataChunk<'_>,
        limits: &Limits,
        scratch: &mut Vec<u8>,
        ctx: &mut Ctx<'_>,
    ) {
        let (dir, ts, len, payload) = (chunk.direction, chunk.ts_ns, chunk.len, chunk.payload);
        self.last_ts = self.last_ts.max(ts);
        let request_dir = match self.pairing.role {
            Some(Side::Server) => Direction::Ingress,
            _ => Direction::Egress,
        };
        match self.pairing.state {
            ConnState::Tracking => {}
            ConnState::Draining if dir != request_dir => {}
            ConnState::Draining => return,
            ConnState::Tunnel | ConnState::Desynced => return,
            ConnState::NotHttp => {
                // A connection we once misjudged (joined mid-body) may start over.
                if payload.is_empty() || !is_definite_start(payload, MsgKind::Request) {
                    return;
                }
                *self = Conn::new(self.pairing.conn_id, ts, limits.budget.clone());
                ctx.counters.revived_connections += 1;
            }
        }
        let (this, other) = match dir {
            Direction::Ingress => (&mut self.ingress, &mut self.egress),
            Direction::Egress => (&mut self.egress, &mut self.ingress),
        };
        let mut sink = ConnSink {
            dir,
            pairing: &mut self.pairing,
            other,
            ctx: &mut *ctx,
        };
        this.feed(ts, len, payload, limits, scratch, &mut sink);
        if self.pairing.state == ConnState::Draining && self.pairing.pending.is_empty() {
            self.pairing.state = ConnState::Desynced;
        }
        if !self.pairing.is_live() {
            self.ingress.release();
            self.egress.release();
        }
    }

    /// The connection is gone (closed, idle, evicted): emit what it holds.
    /// `end_ns` ends exchanges that never saw a response.
    pub(crate) fn finish(mut self, end_ns: u64, scratch: &mut Vec<u8>, ctx: &mut Ctx<'_>) {
        if !self.pairing.is_live() {
            return;
        }
        let (req_parser, resp_parser) = match self.pairing.role {
            Some(Side::Client) => (&self.egress, &self.ingress),
            Some(Side::Server) => (&self.ingress, &self.egress),
            // Nothing parsed yet: a head in progress tells the side.
            None if self.egress.pending_head().is_some() => (&self.egress, &self.ingress),
            None => (&self.ingress, &self.egress),
        };
        let side = self
            .pairing
            .role
            .unwrap_or(if std::ptr::eq(req_parser, &self.egress) {
                Side::Client
            } else {
                Side::Server
            });
        if self.pairing.resp_attached
            && let Some(ex) = self.pairing.pending.pop_front()
        {
            match resp_parser.open_unframed() {
                Some((MsgKind::Response, last_ts)) => {
                    ctx.counters.unframed_responses += 1;
                    emit(ex, last_ts, false, ctx);
                }
                _ => {
                    let end = ex.resp_last_ts;
                    emit(ex, end, true, ctx);
                }
            }
        }
        while let Some(ex) = self.pairing.pending.pop_front() {
            let end = if ex.resp_started {
                ex.resp_last_ts
            } else {
                end_ns
            };
            emit(ex, end, true, ctx);
        }
        if let Some((bytes, start)) = req_parser.pending_head() {
            // Closed inside a request head: report it if its start line was there.
            match parse_truncated(bytes, scratch) {
                Some(Head::Request(r)) => {
                    let mut req = HttpRequest::synthetic(Side::Server, "", "", 0, start, end_ns)
                        .with_conn_id(self.pairing.conn_id);
                    req.side = side;
                    req.method = r.method;
                    req.target = r.target;
                    req.version_minor = r.version_minor;
                    req.headers = r.headers;
                    req.request_bytes = bytes.len() as u64;
                    req.incomplete = true;
                    ctx.counters.incomplete_exchanges += 1;
                    ctx.out.push(req);
                }
                _ => ctx.counters.incomplete_exchanges += 1,
            }
        }
    }
}
