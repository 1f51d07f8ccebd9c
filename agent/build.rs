//! Builds the eBPF object (agent-ebpf) for bpfel-unknown-none with nightly and
//! bpf-linker; the agent embeds it with `include_bytes_aligned!`.
//! `cargo xtask setup` installs what this needs.
//!
//! Fuzz builds (`cargo fuzz` passes `--cfg fuzzing`) and builds with
//! `SLOGUARD_NO_EBPF=1` embed an empty object instead: the nested eBPF build
//! would inherit the sanitizer flags and fail, and fuzz targets never load
//! probes. Such a binary refuses to start its probes with a clear error.
use anyhow::{Context as _, anyhow};

/// Set to 1 to build the agent without its eBPF programs.
const NO_EBPF_ENV: &str = "SLOGUARD_NO_EBPF";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed={NO_EBPF_ENV}");
    let fuzzing = std::env::var_os("CARGO_CFG_FUZZING").is_some();
    if fuzzing || std::env::var(NO_EBPF_ENV).is_ok_and(|v| v == "1") {
        let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
        std::fs::write(std::path::Path::new(&out).join("sloguard-probes"), b"")
            .context("writing the empty eBPF object")?;
        return Ok(());
    }
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
