//! Request snapshots end to end on the real kernel: a shop where only
//! `X-Gray-Tag: canary` requests fail and slow down while a fault file
//! exists. L2 fires; the alert and the fuse audit carry the snapshot id; the
//! frozen set comes from the admin API as HAR that validates against the HAR
//! 1.2 schema; `sloguard snapshots diff` names the gray tag first, told
//! nothing; `sloguard replay` reports the failures while the fault is on and
//! the recovery once it is lifted. Credentials sent along never show up in
//! the snapshots, the HAR, the logs, the audit, the metrics or the spans.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::agent::{Agent, sloguard_bin};
use tests::env;
use tests::otlp::OtlpReceiver;
use tests::shop::{Fault, Shop};
use tests::webhook::{client, firing, receiver, wait};

/// Validates a HAR file against the `har-schema` package's JSON Schemas.
const VALIDATE: &str = r#"
import json, pathlib, sys
import jsonschema, referencing, referencing.jsonschema
d = pathlib.Path(sys.argv[1])
spec = referencing.jsonschema.DRAFT6
reg = referencing.Registry()
for p in d.glob("*.json"):
    reg = reg.with_resource(p.name, referencing.Resource.from_contents(json.loads(p.read_text()), default_specification=spec))
v = jsonschema.Draft6Validator(json.loads((d / "har.json").read_text()), registry=reg, format_checker=jsonschema.FormatChecker())
errors = list(v.iter_errors(json.loads(pathlib.Path(sys.argv[2]).read_text())))
for e in errors[:5]:
    print(list(e.absolute_path), e.message)
sys.exit(1 if errors else 0)
"#;

const SECRETS: [&str; 3] = ["SECRET-AUTH-e2e", "SECRET-COOKIE-e2e", "SECRET-TOKEN-e2e"];

/// Where `npm install -g har-schema` put its schemas.
fn har_schema_dir() -> Option<std::path::PathBuf> {
    let out = Command::new("npm").args(["root", "-g"]).output().ok()?;
    let dir = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("har-schema/lib");
    dir.join("har.json").exists().then_some(dir)
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sloguard_bin())
        .args(args)
        .output()
        .expect("run sloguard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn audit_snapshot_id(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["snapshot_id"].as_str().map(String::from))
}

#[test]
fn canary_failures_are_frozen_diffed_and_replayed() {
    if !env::require_kernel() || !env::require(env::has_program("python3"), "python3") {
        return;
    }
    let schema = har_schema_dir();
    if !env::require(
        schema.is_some(),
        "npm package har-schema (cargo xtask setup)",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fault = tmp.path().join("fault");
    // Only `X-Gray-Tag: canary` requests fail (80 %) and slow down, while
    // the fault file exists.
    let server = Shop::start(Fault::HeaderWhileFileExists {
        header: "X-Gray-Tag".into(),
        value: "canary".into(),
        file: fault.clone(),
        share: 0.8,
    });
    let (port, shop) = (server.port(), server.addr);
    let (hook, received) = receiver();
    let rx = OtlpReceiver::start();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "snapshots-e2e-token-0123456789abcdef\n").unwrap();
    let audit = tmp.path().join("audit.jsonl");
    let admin = format!("127.0.0.1:{}", env::free_port());
    let yaml = format!(
        r#"
log:
  format: json
services:
  rules:
    - name: snap-shop
      port: {port}
routes:
  patterns:
    - pattern: /api/items/{{id}}
  # Cohorts are `version:` tags: a bare `canary` tag is judged with stable
  # traffic (so L2 can fire), and nobody told the agent it matters.
  gray_dimensions: [version]
{slo}alerts:
  webhooks:
    - name: e2e
      url: http://{hook}/hook
fuse:
  mode: dry_run
  min_requests: 5
  # The shop has one route: let it be fused.
  max_fused_share: 1.0
  state_file: {dir}/state.json
  audit_file: {audit}
admin:
  listen: {admin}
  token_file: {token}
otlp:
  endpoint: {otlp}
  protocol: grpc
  root_sampling_ratio: 1.0
"#,
        slo = tests::shop::QUICK_SLO_YAML,
        dir = tmp.path().display(),
        audit = audit.display(),
        token = token_file.display(),
        otlp = rx.endpoint(),
    );
    let agent = Agent::start(&yaml).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let secret_headers = vec![
        "Authorization: Bearer SECRET-AUTH-e2e".to_string(),
        "Cookie: session=SECRET-COOKIE-e2e".to_string(),
        "X-Gray-Tag: canary".to_string(),
    ];
    let plan: Vec<(&str, Vec<String>, u64)> = vec![
        ("/api/items/1", vec![], 40),
        ("/api/items/2", vec!["X-Gray-Tag: stable".into()], 40),
        ("/api/items/3", vec!["X-Gray-Tag: canary".into()], 100),
        ("/api/items/5", vec!["X-Gray-Tag: canary".into()], 100),
        ("/api/items/6", vec!["X-Gray-Tag: canary".into()], 100),
        (
            "/api/items/4?token=SECRET-TOKEN-e2e&page=2",
            secret_headers,
            200,
        ),
    ];
    let clients: Vec<_> = plan
        .into_iter()
        .map(|(path, headers, ms)| {
            let stop = stop.clone();
            let path = path.to_string();
            std::thread::spawn(move || client(shop, path, headers, Duration::from_millis(ms), stop))
        })
        .collect();
    // Healthy periods for the baseline, then the fault just after a period boundary.
    std::thread::sleep(Duration::from_secs(7));
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(1000 - ms % 1000 + 50));
    std::fs::write(&fault, b"1").unwrap();

    let (_, payload) = wait(Duration::from_secs(20), || {
        firing(&received, "SloguardP99SpikeWith5xxBurst", |_| true)
    })
    .unwrap_or_else(|| panic!("no L2 alert: {}", agent.log()));
    let id = payload["alerts"][0]["annotations"]["snapshot_id"]
        .as_str()
        .unwrap_or_else(|| panic!("L2 alert without snapshot_id: {payload}"))
        .to_string();
    eprintln!("L2 alert carries snapshot id {id}");
    let audited = wait(Duration::from_secs(10), || audit_snapshot_id(&audit));
    assert_eq!(
        audited.as_deref(),
        Some(id.as_str()),
        "fuse audit entry carries the id"
    );

    // The frozen set from the admin API, through the CLI, as HAR.
    let url = format!("http://{admin}");
    let token = token_file.to_str().unwrap();
    let (code, listing, err) = cli(&["snapshots", "list", "--admin", &url, "--token-file", token]);
    assert_eq!(code, 0, "{err}");
    assert!(listing.contains(&id), "{listing}");
    let har_path = tmp.path().join("frozen.har");
    let har = har_path.to_str().unwrap();
    let (code, _, err) = cli(&[
        "snapshots",
        "get",
        &id,
        "-o",
        har,
        "--admin",
        &url,
        "--token-file",
        token,
    ]);
    assert_eq!(code, 0, "{err}");
    let har_text = std::fs::read_to_string(&har_path).unwrap();
    let doc: Value = serde_json::from_str(&har_text).unwrap();
    let entries = doc["log"]["entries"].as_array().unwrap();
    let failed = entries
        .iter()
        .filter(|e| e["_sloguard"]["set"] == "failed")
        .count();
    let healthy = entries.len() - failed;
    assert!(
        failed >= 5 && healthy >= 5,
        "failed {failed}, healthy {healthy}"
    );
    let out = Command::new("python3")
        .args(["-c", VALIDATE])
        .arg(schema.unwrap())
        .arg(&har_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "HAR does not validate against har-schema: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the token: refused.
    let (code, _, err) = cli(&[
        "snapshots",
        "list",
        "--admin",
        &url,
        "--token-file",
        "/dev/null",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("401"), "{err}");

    // Told nothing, the diff names the gray tag first (admin API and file agree).
    let (code, text, err) = cli(&[
        "snapshots",
        "diff",
        &id,
        "--json",
        "--admin",
        &url,
        "--token-file",
        token,
    ]);
    assert_eq!(code, 0, "{err}");
    let d: Value = serde_json::from_str(&text).unwrap();
    let top = &d["factors"][0];
    assert_eq!(
        (top["dimension"].as_str(), top["value"].as_str()),
        (Some("gray_tag"), Some("canary")),
        "{text}"
    );
    let (code, table, err) = cli(&["snapshots", "diff", "--har", har]);
    assert_eq!(code, 0, "{err}");
    eprintln!("{table}");
    let first = table.lines().nth(2).unwrap_or_default();
    assert!(
        first.contains("gray_tag") && first.contains("canary"),
        "{table}"
    );

    // Replay the failed set: failures while the fault is on ...
    let target = format!("http://{shop}");
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--har",
            har,
            "--target",
            &target,
            "--rate",
            "20",
            "--max-requests",
            "20",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (code, text, err) = replay(&[]);
    eprintln!(
        "replay with the fault on: {}",
        text.lines().last().unwrap_or_default()
    );
    assert_eq!(code, 1, "{text}{err}");
    let summary = text.lines().last().unwrap_or_default().to_string();
    assert!(
        summary.starts_with("before: ") && !summary.contains("now: 0/"),
        "{summary}"
    );
    // ... and the recovery once it is lifted.
    std::fs::remove_file(&fault).unwrap();
    let (code, text, err) = replay(&[]);
    let summary = text.lines().last().unwrap_or_default().to_string();
    eprintln!("replay after the fix: {summary}");
    assert_eq!(code, 0, "{text}{err}");
    assert!(summary.contains("now: 0/"), "{summary}");

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // Redaction: the credentials went to the service, and nowhere else.
    let spans = rx.spans();
    assert!(!spans.is_empty(), "spans were exported");
    let metrics = agent.scrape().unwrap();
    let places = [
        ("HAR", har_text.clone()),
        ("agent log", agent.log()),
        (
            "fuse audit",
            std::fs::read_to_string(&audit).unwrap_or_default(),
        ),
        ("metrics", metrics),
        ("spans", format!("{spans:?}")),
    ];
    for (what, text) in &places {
        for s in SECRETS {
            assert!(!text.contains(s), "{s} in the {what}");
        }
    }
    assert!(
        har_text.contains("token=REDACTED"),
        "the query key stays, its value does not"
    );
    assert!(
        har_text.contains("\"authorization\""),
        "credentials are noted by name"
    );
    drop(server);
    drop(agent);
}
