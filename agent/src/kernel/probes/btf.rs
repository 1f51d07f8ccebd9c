//! Kernel struct offsets the probes need, read from the running kernel's BTF
//! (aya has no CO-RE for Rust probes, so userspace resolves them and hands
//! them over in the CONFIG map).
use agent_common::KernelOffsets;
use btf_rs::{Btf, Type};

use super::ProbeError;

/// Offsets for this kernel, from `/sys/kernel/btf/vmlinux`.
pub fn kernel_offsets() -> Result<KernelOffsets, ProbeError> {
    let btf =
        Btf::from_file("/sys/kernel/btf/vmlinux").map_err(|e| ProbeError::Btf(e.to_string()))?;
    let cb = member_offset(&btf, "sk_buff", "cb")?;
    let segs = member_offset(&btf, "tcp_skb_cb", "tcp_gso_segs")?;
    let sk_type = member_offset(&btf, "sock", "sk_type")?;
    let sk_protocol = member_offset(&btf, "sock", "sk_protocol")?;
    // The probe reads both adjacent u16s with one 4-byte load and compares the
    // word with what a TCP stream socket holds (little-endian).
    const SOCK_STREAM: u32 = 1;
    const IPPROTO_TCP: u32 = 6;
    let (sk_type_proto, sk_tcp_word) = if sk_protocol + 2 == sk_type {
        (sk_protocol, IPPROTO_TCP | SOCK_STREAM << 16)
    } else if sk_type + 2 == sk_protocol {
        (sk_type, SOCK_STREAM | IPPROTO_TCP << 16)
    } else {
        return Err(ProbeError::Btf(format!(
            "struct sock: sk_type (at {sk_type}) and sk_protocol (at {sk_protocol}) are not adjacent"
        )));
    };
    Ok(KernelOffsets {
        skb_gso_segs: cb + segs,
        valid: 1,
        sock_sk_err: member_offset(&btf, "sock", "sk_err")?,
        _pad: 0,
        sk_type_proto,
        sk_tcp_word,
    })
}

/// Byte offset of `member` in `struct name`, searching anonymous
/// struct/union members recursively (`tcp_gso_segs` sits in one).
pub fn member_offset(btf: &Btf, name: &str, member: &str) -> Result<u32, ProbeError> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|e| ProbeError::Btf(format!("{name}: {e}")))?;
    for t in types {
        if let Type::Struct(s) = t
            && let Some(bits) = find_member(btf, &s, member, 0)
        {
            return Ok(bits / 8);
        }
    }
    Err(ProbeError::Btf(format!(
        "struct {name} has no member {member}"
    )))
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Option<u32> {
    for m in &s.members {
        let off = base_bits + m.bit_offset();
        let mname = btf.resolve_name(m).unwrap_or_default();
        if mname == member {
            return Some(off);
        }
        if mname.is_empty() {
            // Anonymous struct or union: look inside.
            if let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m)
                && let Some(o) = find_member(btf, &inner, member, off)
            {
                return Some(o);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_gso_segs_in_this_kernel() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            assert!(std::env::var_os("CI").is_none(), "CI needs kernel BTF");
            eprintln!("skipped: no /sys/kernel/btf/vmlinux");
            return;
        }
        let o = kernel_offsets().unwrap();
        assert_eq!(o.valid, 1);
        // cb is 40 bytes into sk_buff on every x86_64 kernel since 4.x; gso_segs
        // follows seq/end_seq (8 bytes) in tcp_skb_cb.
        assert_eq!(o.skb_gso_segs, 40 + 8, "{o:?}");
        assert!(o.sk_type_proto > 16 && o.sk_type_proto < 1024, "{o:?}");
        assert_eq!(
            o.sk_tcp_word,
            6 | 1 << 16,
            "sk_protocol precedes sk_type in 6.x"
        );
    }
}
