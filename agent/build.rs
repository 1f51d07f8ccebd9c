//! Builds the eBPF object (agent-ebpf) for bpfel-unknown-none with nightly and
//! bpf-linker; the agent embeds it with `include_bytes_aligned!`.
//! `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root_dir = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent dir"))?
        .join("agent-ebpf");
    println!("cargo:rerun-if-changed={}", root_dir.display());
    println!("cargo:rerun-if-changed=../agent-common/src");
    let pkg = aya_build::Package {
        name: "agent-ebpf",
        root_dir: root_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?,
        ..Default::default()
    };
    aya_build::build_ebpf([pkg], aya_build::Toolchain::default())
        .context("building agent-ebpf (run `cargo xtask setup` first)")
}
