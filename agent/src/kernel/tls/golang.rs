//! Finding Go's `crypto/tls` in an executable: a Go binary (it has a
//! `.go.buildinfo` section, which even `-ldflags='-s -w'` keeps) whose own
//! symbol table (`.symtab`) names `crypto/tls.(*Conn).Read` and `.Write`.
//! The probes go at each function's entry and at every RET instruction in
//! its body (found by decoding its machine code): Go moves goroutine stacks,
//! so the return-address trick of a uretprobe is not safe there.
use iced_x86::{Code, Decoder, DecoderOptions, Instruction};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

use super::discover::{At, Site, Unattachable};

/// The functions probed; `(*Conn).Read` and `(*Conn).Write` take the same
/// arguments (receiver, slice) and return `(n int, err error)`.
pub const GO_SYMBOLS: [&str; 2] = ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"];

/// Functions longer than this are not decoded (each is a few hundred
/// bytes; a corrupt size must not make the agent decode a whole binary).
const MAX_FUNCTION_BYTES: u64 = 64 * 1024;

/// Whether `obj` was built by the Go toolchain.
pub fn is_go(obj: &object::File<'_>) -> bool {
    obj.section_by_name(".go.buildinfo").is_some()
}

/// The Go release that built `obj`, from `.go.buildinfo` (Go ≥ 1.18
/// writes it inline: a 14-byte magic, pointer size, flags with bit 1 set,
/// then at offset 32 a varint-length-prefixed string such as `go1.19.8`).
pub fn go_version(obj: &object::File<'_>) -> Option<String> {
    let data = obj.section_by_name(".go.buildinfo")?.data().ok()?;
    if data.get(..14)? != b"\xff Go buildinf:" || data.get(15)? & 2 == 0 {
        return None;
    }
    let len = usize::from(*data.get(32)?);
    // One varint byte: a version string is far shorter than 128 bytes.
    if len >= 0x80 {
        return None;
    }
    let v = data.get(33..33 + len)?;
    std::str::from_utf8(v).ok().map(str::to_string)
}

/// Whether the register ABI the probes read is the one `version` uses:
/// amd64 ABIInternal arrived in Go 1.17; the inline build info (how the
/// version is read) in 1.18, so older binaries are refused.
fn register_abi(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("go1.") else {
        return false;
    };
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    minor.parse::<u32>().is_ok_and(|m| m >= 17)
}

/// Entry and RET sites of the probed functions in a Go binary. A binary
/// without a symbol table (stripped) is [`Unattachable::Stripped`]; one
/// without `crypto/tls` is [`Unattachable::NoSymbols`]; one for another
/// architecture or an older Go ABI is [`Unattachable::UnsupportedGo`].
pub fn go_sites(obj: &object::File<'_>) -> Result<Vec<Site>, Unattachable> {
    if obj.architecture() != object::Architecture::X86_64
        || !go_version(obj).is_some_and(|v| register_abi(&v))
    {
        return Err(Unattachable::UnsupportedGo);
    }
    if obj.section_by_name(".symtab").is_none() {
        // Stripping keeps the runtime's function table: it tells a stripped
        // binary that carries crypto/tls (counted) from one that does not.
        return Err(if carries_go_tls(obj) {
            Unattachable::Stripped
        } else {
            Unattachable::NoSymbols
        });
    }
    let mut out = Vec::new();
    for want in GO_SYMBOLS {
        let sym = obj
            .symbols()
            .find(|s| s.kind() == SymbolKind::Text && s.name() == Ok(want))
            .ok_or(Unattachable::NoSymbols)?;
        // Only code is decoded and probed: a symbol claiming to be a
        // function in a data section is not trusted.
        let section = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
            .filter(|s| s.kind() == SectionKind::Text)
            .ok_or(Unattachable::NoSymbols)?;
        let (file_off, file_len) = section.file_range().ok_or(Unattachable::NoSymbols)?;
        let rel = sym
            .address()
            .checked_sub(section.address())
            .ok_or(Unattachable::NoSymbols)?;
        let size = sym.size();
        if size == 0 || size > MAX_FUNCTION_BYTES || rel.saturating_add(size) > file_len {
            return Err(Unattachable::Undecodable);
        }
        let code = section
            .data()
            .ok()
            .and_then(|d| d.get(rel as usize..(rel + size) as usize))
            .ok_or(Unattachable::Unreadable)?;
        let rets = ret_offsets(code)?;
        out.push(Site {
            symbol: want,
            at: At::Entry,
            offset: file_off + rel,
        });
        out.extend(rets.into_iter().map(|r| Site {
            symbol: want,
            at: At::Return,
            offset: file_off + rel + r,
        }));
    }
    Ok(out)
}

/// Whether the function-name table (`.gopclntab`, NUL-terminated names)
/// names `crypto/tls.(*Conn).Read`.
fn carries_go_tls(obj: &object::File<'_>) -> bool {
    let needle = b"crypto/tls.(*Conn).Read\0";
    obj.section_by_name(".gopclntab")
        .and_then(|s| s.data().ok())
        .is_some_and(|d| d.windows(needle.len()).any(|w| w == needle))
}

/// Offsets of the RET instructions in one function's machine code. Every
/// byte must decode: a uprobe placed inside an instruction would corrupt
/// the program, so anything unexpected refuses the binary instead. A
/// function with no RET (it always panics) cannot be used either.
pub fn ret_offsets(code: &[u8]) -> Result<Vec<u64>, Unattachable> {
    let mut dec = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut rets = Vec::new();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        match ins.code() {
            Code::INVALID => return Err(Unattachable::Undecodable),
            Code::Retnq | Code::Retnq_imm16 => rets.push(ins.ip()),
            _ => {}
        }
    }
    if rets.is_empty() {
        return Err(Unattachable::Undecodable);
    }
    Ok(rets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rets_are_found_on_instruction_boundaries_only() {
        // mov eax, 0xc3c3c3c3 (C3 bytes inside an immediate); ret;
        // add rsp, 8; ret 8
        let code = [
            0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0x48, 0x83, 0xc4, 0x08, 0xc2, 0x08, 0x00,
        ];
        assert_eq!(ret_offsets(&code), Ok(vec![5, 10]));
    }

    #[test]
    fn truncated_or_retless_code_is_refused() {
        // mov eax, imm32 cut short.
        assert_eq!(
            ret_offsets(&[0xb8, 0xc3, 0xc3]),
            Err(Unattachable::Undecodable)
        );
        // nop; nop: no return.
        assert_eq!(ret_offsets(&[0x90, 0x90]), Err(Unattachable::Undecodable));
        assert_eq!(ret_offsets(&[]), Err(Unattachable::Undecodable));
    }

    const GO_TOOLS: &str = "/usr/lib/go-1.19/pkg/tool/linux_amd64";

    #[test]
    fn stripped_go_binary_without_crypto_tls_is_not_counted() {
        // Debian's `asm` is stripped and has no TLS in it: like any
        // executable without a TLS library, not a failure.
        let asm = std::path::Path::new(GO_TOOLS).join("asm");
        if asm.exists() {
            assert_eq!(
                super::super::discover::tls_sites(&asm),
                Err(Unattachable::NoSymbols)
            );
        }
    }

    #[test]
    fn go_releases_with_the_register_abi() {
        assert!(register_abi("go1.19.8"));
        assert!(register_abi("go1.17"));
        assert!(register_abi("go1.22rc1"));
        assert!(!register_abi("go1.16.15"));
        assert!(!register_abi("devel +abc"));
        assert!(!register_abi("go1."));
    }

    #[test]
    fn stripped_go_binary_is_told_apart() {
        // Debian ships its `go` command built with -s: buildinfo, no .symtab.
        let go = std::path::Path::new("/usr/lib/go-1.19/bin/go");
        if go.exists() {
            let map = std::fs::read(go).unwrap();
            let obj = object::File::parse(&*map).unwrap();
            assert!(is_go(&obj));
            assert!(go_version(&obj).is_some_and(|v| v.starts_with("go1.19")));
            assert_eq!(
                super::super::discover::tls_sites(go),
                Err(Unattachable::Stripped)
            );
        }
    }
}
