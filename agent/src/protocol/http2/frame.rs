//! HTTP/2 frame reassembly (RFC 9113 §4) from one direction's byte stream,
//! which may arrive with holes: the kernel sends DATA payloads (and anything
//! beyond its capture) as lengths only. A hole inside a frame's payload is
//! harmless (the frame's length says where the next one starts); a hole that
//! covers a frame header loses the framing for good.

/// Length of a frame header.
pub const HEADER_LEN: usize = 9;

/// Frame types this tracker acts on (others are skipped by length).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    /// Skipped like the other control frames; named for the tests' frames.
    #[allow(dead_code)]
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHead {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Frames whose payload the tracker reads; DATA and the rest are lengths.
    fn wants_payload(&self) -> bool {
        matches!(
            self.kind,
            kind::HEADERS
                | kind::CONTINUATION
                | kind::RST_STREAM
                | kind::GOAWAY
                | kind::PUSH_PROMISE
        )
    }
}

/// One frame as the reader delivers it.
#[derive(Debug)]
pub struct Frame<'a> {
    pub head: FrameHead,
    /// The payload when the frame type is read and it arrived whole; empty
    /// for DATA and the other skipped types.
    pub payload: &'a [u8],
    /// The payload was wanted but (part of) it was not captured, or it was
    /// longer than the reader keeps.
    pub lost: bool,
    /// Timestamp of the bytes holding the frame's first byte.
    pub first_ts: u64,
}

/// Reassembles one direction's frames.
#[derive(Debug)]
pub struct FrameReader {
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// The frame whose payload is being read, with its bytes still to come.
    cur: Option<(FrameHead, u32)>,
    keep: bool,
    lost: bool,
    first_ts: u64,
    buf: Vec<u8>,
    max_payload: usize,
    desynced: bool,
}

impl FrameReader {
    /// `max_payload`: payload bytes kept per read frame; a longer one is
    /// delivered as `lost` (the connection's framing survives it).
    pub fn new(max_payload: usize) -> Self {
        Self {
            head: [0; HEADER_LEN],
            head_len: 0,
            cur: None,
            keep: false,
            lost: false,
            first_ts: 0,
            buf: Vec::new(),
            max_payload,
            desynced: false,
        }
    }

    /// The framing was lost (a hole over a frame header): nothing more is read.
    pub fn desynced(&self) -> bool {
        self.desynced
    }

    /// Bytes left of the current frame's payload when the reader does not
    /// need them (DATA and the other skipped frames): a hole there is harmless.
    pub fn unread_payload(&self) -> u32 {
        match self.cur {
            Some((_, left)) if !self.keep => left,
            _ => 0,
        }
    }

    /// Feed captured bytes seen at `ts`; each completed frame goes to `f`.
    pub fn feed(&mut self, mut bytes: &[u8], ts: u64, f: &mut dyn FnMut(Frame<'_>)) {
        while !bytes.is_empty() && !self.desynced {
            let Some((head, left)) = self.cur else {
                if self.head_len == 0 {
                    self.first_ts = ts;
                }
                let n = (HEADER_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                bytes = &bytes[n..];
                if self.head_len == HEADER_LEN {
                    self.start_frame(ts, f);
                }
                continue;
            };
            let n = (left as usize).min(bytes.len());
            if self.keep {
                self.buf.extend_from_slice(&bytes[..n]);
            }
            bytes = &bytes[n..];
            self.cur = Some((head, left - n as u32));
            if left as usize == n {
                self.end_frame(ts, f);
            }
        }
    }

    /// `n` bytes at `ts` were moved but not captured.
    pub fn skip(&mut self, mut n: u64, ts: u64, f: &mut dyn FnMut(Frame<'_>)) {
        while n > 0 && !self.desynced {
            let Some((head, left)) = self.cur else {
                // A hole over a frame header: where the next frame starts is unknown.
                self.desynced = true;
                self.buf = Vec::new();
                return;
            };
            let k = u64::from(left).min(n);
            if self.keep {
                self.lost = true;
                self.keep = false;
                self.buf = Vec::new();
            }
            n -= k;
            self.cur = Some((head, left - k as u32));
            if u64::from(left) == k {
                self.end_frame(ts, f);
            }
        }
    }

    fn start_frame(&mut self, ts: u64, f: &mut dyn FnMut(Frame<'_>)) {
        self.head_len = 0;
        let head = FrameHead::parse(&self.head);
        let wants = head.wants_payload();
        self.keep = wants && head.len as usize <= self.max_payload;
        self.lost = wants && !self.keep;
        self.buf.clear();
        self.cur = Some((head, head.len));
        if head.len == 0 {
            self.end_frame(ts, f);
        }
    }

    fn end_frame(&mut self, _ts: u64, f: &mut dyn FnMut(Frame<'_>)) {
        let Some((head, _)) = self.cur.take() else {
            return;
        };
        f(Frame {
            head,
            payload: if self.keep { &self.buf } else { &[] },
            lost: self.lost,
            first_ts: self.first_ts,
        });
        self.keep = false;
        self.lost = false;
        self.buf.clear();
        // A large kept payload does not pin its buffer for the connection's life.
        if self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        }
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload: padding,
/// priority fields and the promised stream id stripped. `None` when the
/// payload is shorter than its own fields say (a malformed frame).
pub fn header_block<'a>(head: &FrameHead, payload: &'a [u8]) -> Option<&'a [u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if head.flags & flag::PADDED != 0 && head.kind != kind::CONTINUATION {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    let skip = match head.kind {
        kind::HEADERS if head.flags & flag::PRIORITY != 0 => 5,
        kind::PUSH_PROMISE => 4,
        _ => 0,
    };
    p = p.get(skip..)?;
    p.get(..p.len().checked_sub(pad)?)
}
