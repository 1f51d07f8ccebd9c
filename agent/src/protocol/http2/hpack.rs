//! HPACK (RFC 7541) for one direction of a connection, on `loona-hpack`'s
//! decoder, fed one field representation at a time so that a reference the
//! agent cannot resolve (the connection began before the agent, or a header
//! block was lost) costs that field only, never the rest of the block, and
//! never shifts the dynamic table.
//!
//! Why this stays correct without knowing the table's start: dynamic
//! indices count from the newest entry, and every entry inserted since this
//! decoder began is known (or stands in as a placeholder), so an index that
//! lands on one of those is right; one that lands beyond, on an entry older
//! than the agent, is "unknown". A placeholder keeps the table aligned when
//! an inserted field could not be decoded; its name marks it unknown.
use loona_hpack::Decoder;
use loona_hpack::decoder::DecoderError;

/// Name of a dynamic-table entry the agent could not decode. A NUL byte is
/// never valid in an HTTP/2 field name, so no peer can send it.
const PLACEHOLDER: &[u8] = b"\0?";

/// Literal with incremental indexing, new name [`PLACEHOLDER`], empty value.
const PLACEHOLDER_FIELD: [u8; 5] = [0x40, 2, 0, b'?', 0];

/// What decoding one header block gave, beyond its fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOutcome {
    /// Fields referencing table entries the agent does not know.
    pub unknown: u32,
    /// Fields that were malformed (bad integer, bad Huffman code, index 0).
    pub malformed: u32,
}

/// One direction's decoder.
pub struct HpackDecoder {
    dec: Decoder<'static>,
    max_table: usize,
}

impl std::fmt::Debug for HpackDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HpackDecoder")
            .field("max_table", &self.max_table)
            .finish()
    }
}

/// One field representation's kind (RFC 7541 §6) and its length in bytes.
enum Rep {
    Indexed,
    Literal { indexing: bool },
    SizeUpdate(usize),
}

impl HpackDecoder {
    /// `max_table`: the most table bytes kept, whatever size the peer's
    /// encoder announces (memory bound; entries beyond are then "unknown").
    pub fn new(max_table: usize) -> Self {
        let mut dec = Decoder::new();
        dec.set_max_table_size(max_table.min(4096));
        Self { dec, max_table }
    }

    /// Forget the table: after a lost header block the entries it inserted
    /// are unknown, so start over as if the agent had just joined.
    pub fn reset(&mut self) {
        *self = Self::new(self.max_table);
    }

    /// Decode one complete header block, handing each field to `f`.
    pub fn decode(&mut self, block: &[u8], mut f: impl FnMut(&[u8], &[u8])) -> BlockOutcome {
        let mut out = BlockOutcome::default();
        let mut rest = block;
        while !rest.is_empty() {
            let Some((rep, len)) = representation(rest) else {
                // Cut short: the block is malformed from here on, and what it
                // would have inserted is unknown.
                out.malformed += 1;
                self.reset();
                return out;
            };
            let (field, tail) = rest.split_at(len);
            rest = tail;
            match rep {
                Rep::SizeUpdate(n) => self.dec.set_max_table_size(n.min(self.max_table)),
                Rep::Indexed | Rep::Literal { .. } => {
                    let mut placeholder = false;
                    let r = self.dec.decode_with_cb(field, |n, v| {
                        if n.as_ref() == PLACEHOLDER {
                            placeholder = true;
                        } else {
                            f(&n, &v);
                        }
                    });
                    match r {
                        Ok(()) if placeholder => out.unknown += 1,
                        Ok(()) => {}
                        Err(DecoderError::HeaderIndexOutOfBounds) if field[0] != 0x80 => {
                            out.unknown += 1
                        }
                        Err(_) => out.malformed += 1,
                    }
                    if r.is_err() && matches!(rep, Rep::Literal { indexing: true }) {
                        // The peer's table gained an entry here: keep the places.
                        let _ = self.dec.decode_with_cb(&PLACEHOLDER_FIELD, |_, _| {});
                    }
                }
            }
        }
        out
    }
}

/// The representation at the start of `b` and its length, or `None` when
/// `b` ends inside it.
fn representation(b: &[u8]) -> Option<(Rep, usize)> {
    let first = *b.first()?;
    if first & 0x80 != 0 {
        let (_, n) = integer(b, 7)?;
        return Some((Rep::Indexed, n));
    }
    if first & 0xe0 == 0x20 {
        let (v, n) = integer(b, 5)?;
        return Some((Rep::SizeUpdate(usize::try_from(v).ok()?), n));
    }
    let (indexing, prefix) = if first & 0xc0 == 0x40 {
        (true, 6)
    } else {
        (false, 4)
    };
    let (name_index, mut n) = integer(b, prefix)?;
    if name_index == 0 {
        n += string_len(b.get(n..)?)?;
    }
    n += string_len(b.get(n..)?)?;
    Some((Rep::Literal { indexing }, n))
}

/// Length of the string literal at the start of `b`, if `b` holds all of it.
fn string_len(b: &[u8]) -> Option<usize> {
    let (len, n) = integer(b, 7)?;
    let total = n.checked_add(usize::try_from(len).ok()?)?;
    (total <= b.len()).then_some(total)
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1): its value and
/// the bytes it took. At most 5 continuation bytes (values < 2^35), more is malformed.
fn integer(b: &[u8], prefix: u8) -> Option<(u64, usize)> {
    let mask = (1u16 << prefix) as u64 - 1;
    let mut v = u64::from(*b.first()?) & mask;
    if v < mask {
        return Some((v, 1));
    }
    for i in 1..=5 {
        let byte = *b.get(i)?;
        v += u64::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    fn fields(d: &mut HpackDecoder, block: &[u8]) -> (Vec<(String, String)>, BlockOutcome) {
        let mut v = Vec::new();
        let o = d.decode(block, |n, val| {
            v.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(val).into_owned(),
            ))
        });
        (v, o)
    }

    fn req(path: &str) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", path.as_bytes().to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
            (
                b"traceparent",
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
            ),
        ]
    }

    fn encode(e: &mut Encoder<'_>, h: &[(&'static [u8], Vec<u8>)]) -> Vec<u8> {
        e.encode(h.iter().map(|(n, v)| (*n, v.as_slice())))
    }

    #[test]
    fn dynamic_table_reuse_decodes_like_the_encoder_meant() {
        let mut e = Encoder::new();
        let mut d = HpackDecoder::new(4096);
        for i in 0..50 {
            let path = format!("/pkg.Svc/M{}", i % 3);
            let block = encode(&mut e, &req(&path));
            let (f, o) = fields(&mut d, &block);
            assert_eq!(o, BlockOutcome::default());
            assert_eq!(f[2], (":path".into(), path));
            assert_eq!(f.len(), 5);
        }
    }

    /// Literal with incremental indexing, name from static index `name`
    /// (what nghttp2 and gRPC's encoders send for a first `:path`).
    fn lit(name: u8, value: &str) -> Vec<u8> {
        let mut v = vec![0x40 | name, value.len() as u8];
        v.extend(value.as_bytes());
        v
    }

    #[test]
    fn joined_late_knows_static_and_literals_and_counts_the_rest() {
        // Before the agent: `:path` and `content-type` inserted (62 = newest).
        let _before = [
            [0x83, 0x86].as_slice(),
            &lit(4, "/pkg.Svc/Old"),
            &lit(31, "application/grpc"),
        ]
        .concat();
        let mut d = HpackDecoder::new(4096);
        let (f, o) = fields(&mut d, &[0x83, 0x86, 0x80 | 63, 0x80 | 62]);
        // `:method POST` and `:scheme http` are static; the rest is older than the agent.
        assert_eq!(
            f,
            vec![
                (":method".into(), "POST".into()),
                (":scheme".into(), "http".into())
            ]
        );
        assert_eq!(o.unknown, 2);
        // A new path is a literal: known, and inserted where the peer put it.
        let (f, o) = fields(
            &mut d,
            &[
                [0x83, 0x86].as_slice(),
                &lit(4, "/pkg.Svc/New"),
                &[0x80 | 63],
            ]
            .concat(),
        );
        assert!(
            f.contains(&(":path".into(), "/pkg.Svc/New".into())),
            "{f:?}"
        );
        assert_eq!(o.unknown, 1, "content-type moved to 63, still unknown");
        let (f, o) = fields(&mut d, &[0x83, 0x86, 0x80 | 62, 0x80 | 64]);
        assert!(
            f.contains(&(":path".into(), "/pkg.Svc/New".into())),
            "{f:?}"
        );
        assert_eq!(o.unknown, 1, "{f:?}");
    }

    #[test]
    fn a_field_that_cannot_be_decoded_keeps_the_table_aligned() {
        let mut d = HpackDecoder::new(4096);
        // Literal with indexing whose name is dynamic index 62 (unknown),
        // then a literal with a new name, then two references to the table.
        let mut block = vec![0x40 | 62, 1, b'x'];
        block.extend([0x40, 1, b'a', 1, b'b']);
        block.extend([0x80 | 62, 0x80 | 63]);
        let (f, o) = fields(&mut d, &block);
        // 62 is now a:b (newest); 63 the placeholder for the unknown field.
        assert_eq!(f, vec![("a".into(), "b".into()), ("a".into(), "b".into())]);
        assert_eq!(o.unknown, 2);
        assert_eq!(o.malformed, 0);
    }

    #[test]
    fn malformed_blocks_are_counted_not_trusted() {
        let mut d = HpackDecoder::new(4096);
        for bad in [
            &[0x80u8][..],                               // index 0
            &[0x40, 5, b'a'],                            // name longer than the block
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // endless integer
            &[0x00, 0x81, 0xff, 1, b'v'],                // bad Huffman name
        ] {
            let (f, o) = fields(&mut d, bad);
            assert!(f.is_empty(), "{bad:?}: {f:?}");
            assert!(o.malformed + o.unknown >= 1, "{bad:?}");
        }
    }

    #[test]
    fn a_table_size_beyond_the_cap_is_held_to_the_cap() {
        let mut d = HpackDecoder::new(100);
        // Size update to 65536, then a 90-byte entry and a 90-byte entry:
        // with a 100-byte cap only the newest stays.
        let mut block = vec![0x3f, 0xe1, 0xff, 0x03];
        let long = vec![b'v'; 57]; // 1 + 57 + 32 = 90
        block.extend([0x40, 1, b'a', 57]);
        block.extend(&long);
        block.extend([0x40, 1, b'b', 57]);
        block.extend(&long);
        block.extend([0x80 | 62, 0x80 | 63]);
        let (f, o) = fields(&mut d, &block);
        assert_eq!(f.len(), 3, "{f:?}");
        assert_eq!(f[2].0, "b");
        assert_eq!(o.unknown, 1, "index 63 was evicted: counted as unknown");
    }
}
