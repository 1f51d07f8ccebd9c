//! One direction of a connection as a sequence of HTTP/1.x messages: heads
//! reassembled across syscalls, bodies delimited by length, chunked framing,
//! close, or (when framing is lost) by the next message start.
use std::sync::Arc;

use super::budget::{HeadBudget, HeadBuf};
use super::chunked::{ChunkedDecoder, Feed, Skip, ends_with_last_chunk};
use super::head::{
    Classify, Head, HeadEndScan, HeadParse, MsgKind, classify, is_definite_start, parse_head,
    parse_truncated, skip_empty_lines,
};

/// How the body of the current message ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    None,
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Close-delimited response.
    UntilClose,
    /// Framing lost (truncated head, unseen chunk framing, invalid framing):
    /// ends at the next message start. `chunked` enables the last-chunk check.
    Unknown {
        chunked: bool,
    },
}

/// What the receiver of a head wants done with the rest of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Body(Body),
    /// The connection stops speaking HTTP/1.x (101, CONNECT).
    Tunnel,
}

/// When and how a head was seen.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadSeen {
    /// CLOCK_MONOTONIC ns of the message's first byte.
    pub start_ts: u64,
    /// ... and of the syscall that completed the head.
    pub ts: u64,
    /// Head bytes on the wire.
    pub bytes: u64,
    /// Only a prefix of the head was seen.
    pub truncated: bool,
}

/// Receives the messages of one direction.
pub(crate) trait Sink {
    /// A message's first byte arrived; `expect` is the kind this direction carries, if known.
    fn message_start(&mut self, expect: Option<MsgKind>, ts: u64);
    /// A head was parsed.
    fn head(&mut self, head: Head, seen: HeadSeen) -> Plan;
    /// Body bytes of the current message (counted, not seen).
    fn body_bytes(&mut self, kind: MsgKind, n: u64, ts: u64);
    /// The current message ended with its last byte at `end_ts`; `framed` is
    /// false when the end was inferred (next message start), not read.
    fn message_end(&mut self, kind: MsgKind, end_ts: u64, framed: bool);
    /// Bytes that are not HTTP/1.x. `first` when no message was parsed yet in
    /// this direction and the kind is unknown (the connection is not HTTP).
    fn invalid(&mut self, first: bool);
    /// Framing of a `kind` message could not be followed; `message_unseen`
    /// when a whole message start fell outside the capture.
    fn framing_lost(&mut self, kind: MsgKind, message_unseen: bool, ts: u64);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Head bytes so far are in `head_buf`.
    Head,
    Body(Body),
    /// Skip chunks until one starts with a whole start line.
    Resync,
    /// No longer HTTP/1.x.
    Dead,
}

#[derive(Debug)]
pub(crate) struct DirParser {
    state: State,
    head_buf: HeadBuf,
    scan: HeadEndScan,
    /// The kind of message this direction carries, once known.
    pub(crate) expect: Option<MsgKind>,
    /// Kind of the message being read (body states).
    cur: MsgKind,
    msg_start_ts: u64,
    /// Timestamp of the chunk holding the last byte seen of the current message.
    last_ts: u64,
}

pub(crate) struct Limits {
    pub max_head_bytes: usize,
    /// Shared by every head buffer of the tracker (`http.max_head_buffer_bytes`).
    pub budget: Arc<HeadBudget>,
}

impl DirParser {
    pub(crate) fn new(budget: Arc<HeadBudget>) -> Self {
        Self {
            state: State::Idle,
            head_buf: HeadBuf::new(budget),
            scan: HeadEndScan::default(),
            expect: None,
            cur: MsgKind::Request,
            msg_start_ts: 0,
            last_ts: 0,
        }
    }

    /// Bytes of a head not yet complete (used when the connection closes).
    pub(crate) fn pending_head(&self) -> Option<(&[u8], u64)> {
        (self.state == State::Head && !self.head_buf.is_empty())
            .then_some((self.head_buf.bytes(), self.msg_start_ts))
    }

    /// The message in progress has an end that only close or the next
    /// message reveals; returns its kind and last-byte timestamp.
    pub(crate) fn open_unframed(&self) -> Option<(MsgKind, u64)> {
        match self.state {
            State::Body(Body::UntilClose | Body::Unknown { .. }) => Some((self.cur, self.last_ts)),
            _ => None,
        }
    }

    /// Drop buffers (the connection is dead or idle).
    pub(crate) fn release(&mut self) {
        self.head_buf.clear();
    }

    fn fail(&mut self, sink: &mut impl Sink) {
        let first = self.expect.is_none();
        sink.invalid(first);
        self.head_buf.clear();
        self.state = if first { State::Dead } else { State::Resync };
    }

    fn start_body(&mut self, plan: Plan, kind: MsgKind, ts: u64, sink: &mut impl Sink) {
        self.cur = kind;
        self.last_ts = ts;
        self.state = match plan {
            Plan::Tunnel => State::Dead,
            Plan::Body(Body::None) | Plan::Body(Body::Length(0)) => {
                sink.message_end(kind, ts, true);
                State::Idle
            }
            Plan::Body(b) => State::Body(b),
        };
    }

    fn on_head(
        &mut self,
        head: Head,
        ts: u64,
        head_bytes: u64,
        truncated: bool,
        sink: &mut impl Sink,
    ) {
        let kind = head.kind();
        if self.expect.is_some_and(|e| e != kind) {
            self.fail(sink);
            return;
        }
        self.expect = Some(kind);
        self.head_buf.clear();
        let seen = HeadSeen {
            start_ts: self.msg_start_ts,
            ts,
            bytes: head_bytes,
            truncated,
        };
        let plan = sink.head(head, seen);
        let plan = match plan {
            Plan::Body(_) if truncated => Plan::Body(Body::Unknown { chunked: false }),
            p => p,
        };
        self.start_body(plan, kind, ts, sink);
    }

    /// The head continues beyond what can be seen: parse what is there.
    fn truncated_head(
        &mut self,
        ts: u64,
        unseen: u64,
        scratch: &mut Vec<u8>,
        sink: &mut impl Sink,
    ) {
        let head_bytes = self.head_buf.len() as u64 + unseen;
        match parse_truncated(self.head_buf.bytes(), scratch) {
            Some(head) => self.on_head(head, ts, head_bytes, true, sink),
            None => self.fail(sink),
        }
    }

    /// Feed one syscall's bytes: `payload` is the captured prefix of `len` bytes.
    pub(crate) fn feed(
        &mut self,
        ts: u64,
        len: u32,
        payload: &[u8],
        limits: &Limits,
        scratch: &mut Vec<u8>,
        sink: &mut impl Sink,
    ) {
        let mut p = payload;
        // Bytes after the captured prefix, known only by count.
        let mut unseen = u64::from(len).saturating_sub(payload.len() as u64);
        loop {
            match self.state {
                State::Dead => return,
                State::Resync => {
                    // Only a chunk that begins with a start line restarts parsing.
                    if p.len() == payload.len()
                        && self.expect.is_some_and(|k| is_definite_start(p, k))
                    {
                        self.state = State::Idle;
                        continue;
                    }
                    return;
                }
                State::Idle => {
                    // Not at the chunk start: an earlier message ended inside this chunk.
                    let mid_chunk = p.len() < skip_empty_lines(payload).len();
                    p = skip_empty_lines(p);
                    if p.is_empty() {
                        if unseen > 0 {
                            // A message began where we cannot see it.
                            if let Some(kind) = self.expect {
                                sink.framing_lost(kind, true, ts);
                                self.state = State::Resync;
                            }
                        }
                        return;
                    }
                    match (classify(p), self.expect) {
                        (Classify::NotHttp, _) => return self.fail(sink),
                        (Classify::Request, Some(MsgKind::Response))
                        | (Classify::Response, Some(MsgKind::Request)) => return self.fail(sink),
                        _ => {}
                    }
                    self.msg_start_ts = ts;
                    self.last_ts = ts;
                    self.scan.reset();
                    self.head_buf.clear();
                    sink.message_start(self.expect, ts);
                    // Fast path: a whole head inside this chunk, parsed in place.
                    match parse_head(p) {
                        HeadParse::Complete { head, len } => {
                            p = &p[len..];
                            self.on_head(head, ts, len as u64, false, sink);
                        }
                        HeadParse::Invalid => return self.fail(sink),
                        HeadParse::Partial => {
                            self.state = State::Head;
                            let take = p.len().min(limits.max_head_bytes);
                            if self.head_buf.room(take) < take {
                                // Budget spent: parse the part of the head in
                                // hand now rather than wait for the rest.
                                self.head_buf.note_exhausted();
                                let head_bytes = p.len() as u64 + unseen;
                                return match parse_truncated(&p[..take], scratch) {
                                    Some(head) => self.on_head(head, ts, head_bytes, true, sink),
                                    None => self.fail(sink),
                                };
                            }
                            self.head_buf.extend(&p[..take]);
                            let _ = self.scan.find(&p[..take]);
                            if mid_chunk
                                && unseen > 0
                                && let Some(kind) = self.expect
                            {
                                // Pipelined messages run past the capture: more may hide there.
                                sink.framing_lost(kind, true, ts);
                                self.head_buf.clear();
                                self.state = State::Resync;
                                return;
                            }
                            if take < p.len() || unseen > 0 {
                                let extra = (p.len() - take) as u64 + unseen;
                                return self.truncated_head(ts, extra, scratch, sink);
                            }
                            return;
                        }
                    }
                }
                State::Head => {
                    if p.is_empty() {
                        if unseen > 0 {
                            return self.truncated_head(ts, unseen, scratch, sink);
                        }
                        return;
                    }
                    let want = p
                        .len()
                        .min(limits.max_head_bytes.saturating_sub(self.head_buf.len()));
                    let room = self.head_buf.room(want);
                    if room < want {
                        self.head_buf.note_exhausted();
                    }
                    let window = &p[..room];
                    match self.scan.find(window) {
                        Some(end) => {
                            self.head_buf.extend(&window[..=end]);
                            p = &p[end + 1..];
                            let head_bytes = self.head_buf.len() as u64;
                            match parse_head(self.head_buf.bytes()) {
                                HeadParse::Complete { head, .. } => {
                                    self.on_head(head, ts, head_bytes, false, sink)
                                }
                                _ => return self.fail(sink),
                            }
                        }
                        None => {
                            self.head_buf.extend(window);
                            let extra = (p.len() - window.len()) as u64 + unseen;
                            if self.expect.is_none()
                                && classify(skip_empty_lines(self.head_buf.bytes()))
                                    == Classify::NotHttp
                            {
                                return self.fail(sink);
                            }
                            if extra > 0
                                || self.head_buf.len() >= limits.max_head_bytes
                                || room < want
                            {
                                return self.truncated_head(ts, extra, scratch, sink);
                            }
                            return;
                        }
                    }
                }
                State::Body(body) => {
                    let kind = self.cur;
                    match body {
                        Body::None => self.state = State::Idle,
                        Body::Length(rem) => {
                            let seen = (p.len() as u64).min(rem);
                            p = &p[seen as usize..];
                            let hidden = unseen.min(rem - seen);
                            unseen -= hidden;
                            let rem = rem - seen - hidden;
                            if seen + hidden > 0 {
                                self.last_ts = ts;
                                sink.body_bytes(kind, seen + hidden, ts);
                            }
                            if rem == 0 {
                                self.state = State::Idle;
                                sink.message_end(kind, ts, true);
                            } else {
                                self.state = State::Body(Body::Length(rem));
                                return;
                            }
                        }
                        Body::Chunked(mut dec) => {
                            self.last_ts = ts;
                            match dec.feed(p) {
                                Feed::Done { consumed } => {
                                    p = &p[consumed..];
                                    sink.body_bytes(kind, consumed as u64, ts);
                                    self.state = State::Idle;
                                    sink.message_end(kind, ts, true);
                                    continue;
                                }
                                Feed::NeedMore => {}
                                Feed::Invalid => {
                                    sink.framing_lost(kind, false, ts);
                                    sink.body_bytes(kind, p.len() as u64 + unseen, ts);
                                    self.state = State::Body(Body::Unknown { chunked: false });
                                    return;
                                }
                            }
                            sink.body_bytes(kind, p.len() as u64 + unseen, ts);
                            self.state = if dec.skip(unseen) == Skip::Lost {
                                sink.framing_lost(kind, false, ts);
                                State::Body(Body::Unknown { chunked: true })
                            } else {
                                State::Body(Body::Chunked(dec))
                            };
                            return;
                        }
                        Body::UntilClose | Body::Unknown { .. } => {
                            let at_chunk_start = p.len() == payload.len();
                            if at_chunk_start && is_definite_start(p, kind) {
                                self.state = State::Idle;
                                sink.message_end(kind, self.last_ts, false);
                                continue;
                            }
                            self.last_ts = ts;
                            sink.body_bytes(kind, p.len() as u64 + unseen, ts);
                            if let Body::Unknown { chunked: true } = body
                                && at_chunk_start
                                && unseen == 0
                                && ends_with_last_chunk(p)
                            {
                                self.state = State::Idle;
                                sink.message_end(kind, ts, true);
                            }
                            return;
                        }
                    }
                }
            }
        }
    }
}
