//! Print the predicted gains of a JSON profile (`ftprof record --format json`), one JSON object
//! per line, largest first: what is removed, and `factor`, `low`, `high`
//! ([`analysis::gain::top_gains`] on this machine's CPU count). Used by
//! `benches/gain_validation.py`.
//!
//! `cargo run -p analysis --example gain -- PROFILE.json [N]`

use analysis::gain::{top_gains, Target};
use analysis::Profile;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: gain PROFILE.json [N]");
        std::process::exit(2);
    };
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("gain: cannot read {path}: {e}");
        std::process::exit(1)
    });
    let p: Profile = serde_json::from_slice::<Profile>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(Profile::loaded)
        .unwrap_or_else(|e| {
            eprintln!("gain: {path}: {e}");
            std::process::exit(1)
        });
    let cpus = p.summary.cpus.or_else(|| std::thread::available_parallelism().map(|c| c.get()).ok());
    for (t, g) in top_gains(&p, n, cpus) {
        let (kind, what) = match &t {
            Target::Category(c) => ("category", c.name().to_string()),
            Target::Lock { kind, description } => ("lock", format!("{}: {description}", kind.name())),
            Target::Stacks(v) => ("stacks", format!("{} stacks", v.len())),
        };
        println!(
            "{}",
            serde_json::json!({"kind": kind, "target": what, "factor": g.factor, "low": g.low, "high": g.high})
        );
    }
}
