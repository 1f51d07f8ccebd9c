//! `Transfer-Encoding: chunked` framing as a byte-at-a-time state machine, so
//! size lines and CRLFs may be split anywhere across syscalls. Bytes beyond
//! the captured prefix can be skipped by length while inside chunk data.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Reading the hex chunk size.
    Size,
    /// Chunk extension or whitespace after the size, up to the line end.
    Ext,
    /// Saw '\r' after the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    TrailerLine,
    /// Saw '\r' on an empty trailer line.
    EndLf,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkedDecoder {
    st: St,
    size: u64,
    digits: u8,
    remaining: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// All bytes belong to the body; it goes on.
    NeedMore,
    /// The body ended after `consumed` bytes.
    Done { consumed: usize },
    /// Not chunked framing.
    Invalid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    Ok,
    /// Unseen bytes went past chunk data into framing we cannot read.
    Lost,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            st: St::Size,
            size: 0,
            digits: 0,
            remaining: 0,
        }
    }
}

impl ChunkedDecoder {
    fn line_end(&mut self) {
        if self.size == 0 {
            self.st = St::TrailerStart;
        } else {
            self.remaining = self.size;
            self.st = St::Data;
        }
    }

    pub(crate) fn feed(&mut self, b: &[u8]) -> Feed {
        let mut i = 0;
        while i < b.len() {
            if self.st == St::Data {
                let take = (b.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.st = St::DataCr;
                }
                continue;
            }
            let c = b[i];
            i += 1;
            self.st = match (self.st, c) {
                (St::Size, c) if c.is_ascii_hexdigit() => {
                    if self.digits >= 16 {
                        return Feed::Invalid;
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from((c as char).to_digit(16).unwrap_or(0));
                    St::Size
                }
                (St::Size, b';' | b' ' | b'\t') if self.digits > 0 => St::Ext,
                (St::Size, b'\r') if self.digits > 0 => St::SizeLf,
                (St::Size, b'\n') if self.digits > 0 => {
                    self.line_end();
                    self.st
                }
                (St::Ext, b'\r') => St::SizeLf,
                (St::Ext, b'\n') | (St::SizeLf, b'\n') => {
                    self.line_end();
                    self.st
                }
                (St::Ext, _) => St::Ext,
                (St::DataCr, b'\r') => St::DataLf,
                (St::DataCr, b'\n') | (St::DataLf, b'\n') => {
                    self.size = 0;
                    self.digits = 0;
                    St::Size
                }
                (St::TrailerStart, b'\r') => St::EndLf,
                (St::TrailerStart, b'\n') | (St::EndLf, b'\n') => St::Done,
                (St::TrailerStart, _) => St::TrailerLine,
                (St::TrailerLine, b'\n') => St::TrailerStart,
                (St::TrailerLine, _) => St::TrailerLine,
                _ => return Feed::Invalid,
            };
            if self.st == St::Done {
                return Feed::Done { consumed: i };
            }
        }
        Feed::NeedMore
    }

    /// Account for `n` bytes that were moved but not captured. Possible inside
    /// chunk data; the CRLF that closes the data is assumed, since senders
    /// write size line, data and CRLF in one syscall.
    pub(crate) fn skip(&mut self, mut n: u64) -> Skip {
        while n > 0 {
            match self.st {
                St::Data => {
                    let take = n.min(self.remaining);
                    n -= take;
                    self.remaining -= take;
                    if self.remaining == 0 {
                        self.st = St::DataCr;
                    }
                }
                St::DataCr => {
                    n -= 1;
                    self.st = St::DataLf;
                }
                St::DataLf => {
                    n -= 1;
                    self.size = 0;
                    self.digits = 0;
                    self.st = St::Size;
                }
                _ => return Skip::Lost,
            }
        }
        Skip::Ok
    }
}

/// Does a fully captured write end the body with a last chunk? Used after the
/// framing was lost, to still find the end of a chunked body.
pub(crate) fn ends_with_last_chunk(b: &[u8]) -> bool {
    b == b"0\r\n\r\n" || b.ends_with(b"\r\n0\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";

    #[test]
    fn whole_body() {
        let mut d = ChunkedDecoder::default();
        let mut b = BODY.to_vec();
        b.extend_from_slice(b"NEXT");
        assert_eq!(
            d.feed(&b),
            Feed::Done {
                consumed: BODY.len()
            }
        );
    }

    #[test]
    fn every_split_point_and_byte_by_byte() {
        for split in 0..BODY.len() {
            let mut d = ChunkedDecoder::default();
            let (a, b) = BODY.split_at(split);
            assert_eq!(d.feed(a), Feed::NeedMore, "split {split}");
            assert_eq!(d.feed(b), Feed::Done { consumed: b.len() }, "split {split}");
        }
        let mut d = ChunkedDecoder::default();
        for (i, byte) in BODY.iter().enumerate() {
            let r = d.feed(std::slice::from_ref(byte));
            if i + 1 == BODY.len() {
                assert_eq!(r, Feed::Done { consumed: 1 });
            } else {
                assert_eq!(r, Feed::NeedMore, "byte {i}");
            }
        }
    }

    #[test]
    fn skip_inside_data_with_assumed_crlf() {
        let mut d = ChunkedDecoder::default();
        // "10\r\n" + 16 data bytes + CRLF, of which only 6 bytes were captured.
        assert_eq!(d.feed(b"10\r\nab"), Feed::NeedMore);
        assert_eq!(d.skip(14 + 2), Skip::Ok);
        assert_eq!(d.feed(b"0\r\n\r\n"), Feed::Done { consumed: 5 });
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"2\r\nab"), Feed::NeedMore);
        assert_eq!(d.skip(5), Skip::Lost);
    }

    #[test]
    fn invalid_framing() {
        assert_eq!(ChunkedDecoder::default().feed(b"zz\r\n"), Feed::Invalid);
        assert_eq!(ChunkedDecoder::default().feed(b"\r\n"), Feed::Invalid);
        assert_eq!(ChunkedDecoder::default().feed(b"1\r\nab"), Feed::Invalid);
        assert_eq!(
            ChunkedDecoder::default().feed(b"11111111111111111\r\n"),
            Feed::Invalid
        );
    }

    #[test]
    fn last_chunk_detection() {
        assert!(ends_with_last_chunk(b"0\r\n\r\n"));
        assert!(ends_with_last_chunk(b"abc\r\n0\r\n\r\n"));
        assert!(!ends_with_last_chunk(b"10\r\n\r\n"));
    }
}
