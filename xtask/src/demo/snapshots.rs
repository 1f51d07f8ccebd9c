//! The demo's last act: the request snapshots frozen with the L2 alert are
//! fetched as HAR, diffed, and replayed through the gateway to verify the
//! recovery with the very requests that failed.
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

pub struct Admin<'a> {
    pub agent_bin: &'a Path,
    pub url: String,
    pub token_file: &'a Path,
}

fn sloguard(a: &Admin<'_>, args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(a.agent_bin)
        .args(args)
        .output()
        .with_context(|| format!("run sloguard {}", args.join(" ")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text += &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code().unwrap_or(-1), text))
}

/// `snapshots get`, `snapshots diff`, then `replay` of the failed set
/// against `target`; an error unless the replay saw no failure.
pub fn verify_recovery(a: &Admin<'_>, id: &str, target: &str, dir: &Path) -> Result<String> {
    let say = |m: &str| println!("demo: {m}");
    let har = dir.join(format!("{id}.har"));
    let har_s = har.to_str().context("temp path is not UTF-8")?;
    let token = a.token_file.to_str().context("temp path is not UTF-8")?;
    let admin = ["--admin", &a.url, "--token-file", token];
    let mut get = vec!["snapshots", "get", id, "-o", har_s];
    get.extend_from_slice(&admin);
    let (code, text) = sloguard(a, &get)?;
    if code != 0 {
        bail!("sloguard snapshots get {id}: {text}");
    }
    say(&format!(
        "$ sloguard snapshots get {id} -o {id}.har   (HAR 1.2 from the admin API)"
    ));
    let mut diff = vec!["snapshots", "diff", id, "--top", "5"];
    diff.extend_from_slice(&admin);
    let (code, text) = sloguard(a, &diff)?;
    if code != 0 {
        bail!("sloguard snapshots diff {id}: {text}");
    }
    say(&format!("$ sloguard snapshots diff {id} --top 5"));
    for l in text.lines() {
        println!("    {l}");
    }
    let replay = [
        "replay",
        "--har",
        har_s,
        "--target",
        target,
        "--rate",
        "20",
        "--max-requests",
        "40",
    ];
    say(&format!(
        "$ sloguard replay --har {id}.har --target {target} --rate 20 --max-requests 40"
    ));
    let (code, text) = sloguard(a, &replay)?;
    let summary = text.lines().last().unwrap_or_default().to_string();
    println!("    {summary}");
    match code {
        0 => Ok(summary),
        1 => bail!("replay of the frozen failed requests still fails: {summary}"),
        _ => bail!("sloguard replay: {text}"),
    }
}
