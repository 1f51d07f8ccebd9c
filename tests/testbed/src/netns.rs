//! Network namespaces a test creates for itself, a veth pair between two of
//! them, nftables rules on the receiver's input hook (this kernel has no
//! netem: loss must be made where packets arrive, see PLATFORM.md) and `nstat`
//! counters per namespace. Everything is removed on drop, also when the test
//! panics.
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};

/// A network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Netns {
    /// Create `name` with its loopback up. A namespace left by an earlier
    /// killed run under the same name is replaced.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(|_| ())
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Set a per-namespace sysctl (e.g. `net.ipv4.tcp_syn_retries`).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        run(self
            .command("sysctl")
            .args(["-qw", &format!("{key}={value}")]))
        .map(|_| ())
    }

    /// Add `rule` to this namespace's input hook (table `inet sgtest`, chain
    /// `inp`, created on first use). Give rules a `counter` to read
    /// [`Netns::input_counter`] later.
    pub fn nft_input_rule(&self, rule: &str) -> anyhow::Result<()> {
        let script = format!(
            "table inet sgtest {{\n chain inp {{ type filter hook input priority 0; policy accept; }}\n}}\n\
             add rule inet sgtest inp {rule}\n"
        );
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft rejected `{rule}` in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Packets matched by the `counter` statements of the input chain, summed.
    pub fn input_counter(&self) -> anyhow::Result<u64> {
        let out = run(self
            .command("nft")
            .args(["list", "chain", "inet", "sgtest", "inp"]))?;
        Ok(sum_counter_packets(&String::from_utf8_lossy(&out.stdout)))
    }

    /// An absolute SNMP counter of this namespace (`nstat -asz NAME`), e.g.
    /// `TcpRetransSegs`. nstat counts per namespace; the tracepoints see all.
    pub fn nstat(&self, counter: &str) -> anyhow::Result<u64> {
        let out = run(self.command("nstat").args(["-asz", counter]))?;
        parse_nstat(&String::from_utf8_lossy(&out.stdout), counter)
            .with_context(|| format!("nstat in {} has no {counter}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth end, routes and nft tables.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// `TcpRetransSegs   123   0.0` → 123.
pub fn parse_nstat(text: &str, counter: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == counter).then(|| f.next()?.parse().ok())?
    })
}

fn sum_counter_packets(text: &str) -> u64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "counter" && w[1] == "packets")
        .filter_map(|w| w[2].parse::<u64>().ok())
        .sum()
}

/// Two namespaces `a` and `b` joined by a veth pair: `a` is `10.200.N.1/30`,
/// `b` is `10.200.N.2/30`. Addresses only exist inside these namespaces, but
/// the tracepoints see every namespace: give parallel tests distinct `N` and
/// ports so their tuples never collide.
#[derive(Debug)]
pub struct NetPair {
    pub a: Netns,
    pub b: Netns,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
}

impl NetPair {
    /// Namespaces `sg-<tag>-<pid>-a` / `-b` on subnet `10.200.<subnet>.0/30`.
    pub fn create(tag: &str, subnet: u8) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let a = Netns::create(&format!("sg-{tag}-{pid}-a"))?;
        let b = Netns::create(&format!("sg-{tag}-{pid}-b"))?;
        run(Command::new("ip").args([
            "link",
            "add",
            "veth0",
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            b.name(),
        ]))?;
        let a_addr = Ipv4Addr::new(10, 200, subnet, 1);
        let b_addr = Ipv4Addr::new(10, 200, subnet, 2);
        for (ns, addr) in [(&a, a_addr), (&b, b_addr)] {
            ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", "veth0"])?;
            ns.ip(&["link", "set", "veth0", "up"])?;
        }
        Ok(Self {
            a,
            b,
            a_addr,
            b_addr,
        })
    }
}

/// nftables rule bodies for [`Netns::nft_input_rule`] on the receiver.
pub mod rules {
    /// Drop one in `n` TCP packets to `dport`, at random.
    pub fn drop_one_in(dport: u16, n: u32) -> String {
        format!("tcp dport {dport} numgen random mod {n} == 0 counter drop")
    }

    /// Drop exactly the first SYN to `dport`: the quota is bigger than one SYN
    /// (60 bytes with options) and smaller than two, so the retransmitted SYN
    /// passes. Install it fresh for each connect.
    pub fn drop_first_syn(dport: u16) -> String {
        format!(
            "tcp dport {dport} tcp flags & (syn | ack) == syn quota until 100 bytes counter drop"
        )
    }

    /// Drop exactly the first SYN-ACK from `sport` (install on the client's
    /// side): the server retransmits it.
    pub fn drop_first_synack(sport: u16) -> String {
        format!(
            "tcp sport {sport} tcp flags & (syn | ack) == syn | ack quota until 100 bytes counter drop"
        )
    }

    /// Drop every SYN to `dport`: connects there time out.
    pub fn drop_syns(dport: u16) -> String {
        format!("tcp dport {dport} tcp flags & (syn | ack) == syn counter drop")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nstat_lines() {
        let text = "#kernel\nTcpRetransSegs                  1442               0.0\n";
        assert_eq!(parse_nstat(text, "TcpRetransSegs"), Some(1442));
        assert_eq!(parse_nstat(text, "TcpOutSegs"), None);
        assert_eq!(parse_nstat("TcpRetransSegs x", "TcpRetransSegs"), None);
    }

    #[test]
    fn sums_nft_counters() {
        let text = "table inet sgtest {\n chain inp {\n tcp dport 5001 counter packets 7 bytes 420 drop\n tcp dport 5002 counter packets 2 bytes 120 drop\n }\n}\n";
        assert_eq!(sum_counter_packets(text), 9);
    }
}
