//! `ftprof report`: render a saved JSON profile (from `ftprof record --format json`) in any
//! format, e.g. the HTML report; or re-analyse a capture (`ftprof record --capture`) with this
//! ftprof's decisions and render it.

use std::path::{Path, PathBuf};

use analysis::Profile;
use anyhow::{Context, Result};
use flamegraph::{Format, Mode};

/// Read a JSON profile written by `ftprof record --format json`, or re-analyse a capture
/// written by `ftprof record --capture`.
pub fn load(path: &Path) -> Result<Profile> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if analysis::capture::is_capture(&text) {
        let capture = analysis::capture::decode(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(capture.profile());
    }
    let p: Profile = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a JSON profile of ftprof ({e}); write one with ftprof record --format json",
            path.display()
        )
    })?;
    p.loaded().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// After writing `format`, say how to open it (stderr).
pub fn how_to_open(format: Format) {
    match format {
        Format::Firefox => eprintln!("ftprof: to view it, {}", flamegraph::firefox::HOW_TO_OPEN),
        Format::Speedscope => {
            eprintln!("ftprof: to view it, open https://www.speedscope.app and drop the file on it (read in the browser), or run `speedscope FILE`")
        }
        Format::Pprof => {
            eprintln!("ftprof: to view it, `go tool pprof -http=: FILE`, or send it to Pyroscope (see the README)")
        }
        Format::Html => eprintln!("ftprof: open it in a browser (self-contained, works offline)"),
        _ => {}
    }
}

/// Run `ftprof report`; returns the exit code.
pub fn run(
    input: &Path,
    output: Option<PathBuf>,
    format: Option<Format>,
    mode: Mode,
    idle: bool,
    title: Option<&str>,
) -> Result<i32> {
    let format = match (format, &output) {
        (Some(f), _) => f,
        (None, Some(o)) => Format::from_path(o).with_context(|| {
            format!("cannot tell the format from the name {}; give --format (html, svg, speedscope, firefox, pprof, folded, json)", o.display())
        })?,
        (None, None) => Format::Html,
    };
    let output = output.unwrap_or_else(|| {
        let stem = input.file_stem().and_then(|s| s.to_str()).unwrap_or("profile");
        let ext = format.default_file().split_once('.').map(|x| x.1).unwrap_or("out");
        input.with_file_name(format!("{stem}.{ext}"))
    });
    if output == input {
        anyhow::bail!("the output {} would overwrite the input; choose another with -o", output.display());
    }
    let profile = load(input)?;
    let bytes = flamegraph::render(&profile, format, title, mode, idle)?;
    std::fs::write(&output, bytes)
        .with_context(|| format!("cannot write {}; choose another path with -o", output.display()))?;
    eprintln!("ftprof: wrote {}", output.display());
    how_to_open(format);
    Ok(0)
}
