//! docs/: the config reference embeds config/sloguard.yaml verbatim, and the
//! metrics reference names every family a running agent exports.
use std::time::Duration;

use tests::agent::Agent;
use tests::{env, tools};

const BEGIN: &str = "<!-- BEGIN config/sloguard.yaml (generated; do not edit) -->\n```yaml\n";
const END: &str = "```\n<!-- END config/sloguard.yaml -->";

#[test]
fn config_doc_embeds_the_reference_file() {
    let root = tools::repo_root();
    let reference = std::fs::read_to_string(root.join("config/sloguard.yaml")).unwrap();
    let doc_path = root.join("docs/config.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let start = doc.find(BEGIN).expect("BEGIN marker in docs/config.md") + BEGIN.len();
    let len = doc[start..]
        .find(END)
        .expect("END marker in docs/config.md");
    if std::env::var_os("SG_BLESS").is_some() {
        let fresh = format!("{}{reference}{}", &doc[..start], &doc[start + len..]);
        std::fs::write(&doc_path, fresh).unwrap();
        return;
    }
    assert!(
        doc[start..start + len] == reference,
        "docs/config.md's YAML differs from config/sloguard.yaml: \
         regenerate with SG_BLESS=1 cargo test -p tests --test deploy docs::"
    );
}

#[test]
fn metrics_doc_names_every_exported_family() {
    if !env::require_kernel() {
        return;
    }
    let doc = std::fs::read_to_string(tools::repo_root().join("docs/metrics.md")).unwrap();
    let agent = Agent::start("").expect("agent starts");
    // A few requests to the agent itself so the HTTP families have series.
    for _ in 0..3 {
        let _ = tests::agent::http_get(agent.metrics, "/healthz", None);
    }
    let text = agent.scrape_until(Duration::from_secs(10), |t| {
        t.contains("# TYPE sloguard_events_total")
    });
    let mut families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() >= 20, "{text}");
    families.retain(|f| {
        let counter = format!("`{f}_total`");
        !doc.contains(&format!("`{f}`")) && !doc.contains(&counter)
    });
    assert!(families.is_empty(), "docs/metrics.md lacks {families:?}");
}

/// The DaemonSet grants `hostPID` and `SYS_PTRACE`; docs/requirements.md must
/// say what else that exposes (not only what the agent reads), so an operator
/// can weigh it.
#[test]
fn requirements_doc_says_what_host_pid_and_ptrace_expose() {
    let doc = std::fs::read_to_string(tools::repo_root().join("docs/requirements.md")).unwrap();
    let start = doc
        .find("### What `hostPID` and `CAP_SYS_PTRACE` let the agent see")
        .expect("a section on what hostPID and SYS_PTRACE expose");
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    for exposed in ["`environ`", "`mem`", "`root/`", "`fd/`", "`kill`", "uid 0"] {
        assert!(
            section.contains(exposed),
            "section does not cover {exposed}"
        );
    }
}
