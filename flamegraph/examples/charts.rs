//! Render `ftprof scale`'s charts from a results.json (for checking them by eye or by
//! screenshot): `cargo run -p flamegraph --example charts -- DIR/results.json OUT_DIR [TITLE]`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, results, out, ..] = args.as_slice() else {
        anyhow::bail!("usage: charts RESULTS.json OUT_DIR [TITLE]");
    };
    let r: analysis::scaling::ScaleResult = serde_json::from_slice(&std::fs::read(results)?)?;
    let title = args.get(3).cloned().unwrap_or_else(|| format!("ftprof scale: {}", r.command.join(" ")));
    std::fs::create_dir_all(out)?;
    std::fs::write(format!("{out}/scaling.svg"), flamegraph::charts::scaling_svg(&r, &title)?)?;
    std::fs::write(format!("{out}/breakdown.svg"), flamegraph::charts::breakdown_svg(&r, &title)?)?;
    Ok(())
}
