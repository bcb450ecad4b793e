//! `cargo xtask bench`: the XDP per-packet benchmark (gateway's `xdp_bench` example), the
//! end-to-end benchmark (netns-tests' `e2e-bench`), the failover benchmark (netns-tests'
//! `failover-bench`) and a 600 s chaos run with the storm (netns-tests' `chaos`), merged into target/bench/results.json as rows
//! `{"name","value","unit","baseline","ratio"}` and printed as a table.
use crate::step::{self, Steps};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs the benchmarks and merges their rows.
pub fn run(steps: &mut Steps) -> Result<()> {
    let dir = step::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let xdp = dir.join("xdp.json");
    let e2e = dir.join("e2e.json");
    let failover = dir.join("failover.json");
    let chaos = dir.join("chaos.json");
    steps.run("build: release binaries", || {
        step::status(&mut step::cargo(&[
            "build",
            "--release",
            "--workspace",
            "--bins",
        ]))
    })?;
    steps.run("bench: XDP per-packet cost (BPF_PROG_TEST_RUN)", || {
        step::status(&mut step::cargo(&[
            "run",
            "--release",
            "-p",
            "gateway",
            "--example",
            "xdp_bench",
            "--",
            "--json",
            &xdp.to_string_lossy(),
        ]))
    })?;
    steps.run("bench: end to end, gateway vs nftables", || {
        step::status(
            Command::new(step::root().join("target/release/e2e-bench"))
                .arg("--json")
                .arg(&e2e),
        )
    })?;
    steps.run("bench: failover time, keepalived (VRRP)", || {
        step::status(
            Command::new(step::root().join("target/release/failover-bench"))
                .arg("--json")
                .arg(&failover),
        )
    })?;
    steps.run("bench: chaos, 600 s and the new-connection storm", || {
        let args = crate::chaos::Args {
            seconds: 600,
            seed: None,
            json: Some(chaos.clone()),
            storm: true,
            capture: false,
        };
        // A run that missed its targets still measured them: its rows are merged, and the
        // report above says what broke.
        if let crate::chaos::Outcome::Missed = crate::chaos::run_binary("release", &args)? {
            eprintln!("    the chaos run missed its targets; its rows are merged all the same");
        }
        Ok(())
    })?;
    steps.run("bench: merge", || {
        let mut rows = read_rows(&xdp)?;
        rows.extend(read_rows(&e2e)?);
        rows.extend(read_rows(&failover)?);
        rows.extend(read_rows(&chaos)?);
        fill_ratios(&mut rows);
        let out = dir.join("results.json");
        std::fs::write(&out, serde_json::to_string_pretty(&rows)?)?;
        print_table(&rows);
        eprintln!("    written {}", out.display());
        Ok(())
    })
}

fn read_rows(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let rows: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    for row in &rows {
        if !row["name"].is_string() || !row["value"].is_number() || !row["unit"].is_string() {
            bail!("{}: row without name, value or unit: {row}", path.display());
        }
    }
    Ok(rows)
}

/// Sets `ratio = value / baseline's value` on rows that name a baseline and lack a ratio.
fn fill_ratios(rows: &mut [Value]) {
    let values: Vec<(String, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["value"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    for row in rows.iter_mut() {
        let baseline = row["baseline"].as_str().map(str::to_owned);
        let value = row["value"].as_f64().unwrap_or(0.0);
        if row.get("ratio").is_none_or(Value::is_null) {
            let ratio = baseline
                .and_then(|b| values.iter().find(|(n, _)| *n == b).map(|(_, v)| *v))
                .filter(|v| *v != 0.0)
                .map(|v| Value::from(value / v))
                .unwrap_or(Value::Null);
            row["ratio"] = ratio;
        }
        if row.get("baseline").is_none() {
            row["baseline"] = Value::Null;
        }
    }
}

fn print_table(rows: &[Value]) {
    println!(
        "{:<40} {:>14} {:<10} {:<30} {:>8}",
        "name", "value", "unit", "baseline", "ratio"
    );
    for row in rows {
        println!(
            "{:<40} {:>14.2} {:<10} {:<30} {:>8}",
            row["name"].as_str().unwrap_or_default(),
            row["value"].as_f64().unwrap_or(0.0),
            row["unit"].as_str().unwrap_or_default(),
            row["baseline"].as_str().unwrap_or("-"),
            row["ratio"]
                .as_f64()
                .map(|r| format!("{r:.3}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
}
