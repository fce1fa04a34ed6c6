//! SVG charts of `ftprof scale` (plotters): speedup against ideal with the fitted curves, and the
//! time breakdown per thread count. Thread counts sit on an integer axis (log₂ when they are all
//! powers of two), legends outside the plot, the plot sized to its content; a title longer than
//! the chart is shortened in the middle, with the whole of it wrapped below and as the SVG's
//! tooltip (`<title>`).

use analysis::scaling::ScaleResult;
use analysis::Category;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

fn category_rgb(name: &str) -> RGBColor {
    match Category::ALL.iter().find(|c| c.name() == name) {
        Some(&c) => {
            let k = super::legend_color(c);
            RGBColor(k.r, k.g, k.b)
        }
        None => RGBColor(150, 150, 150),
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart failed: {e}")
}

const PLOT_H: u32 = 400;
const TITLE_PX: u32 = 17;
const SUB_PX: u32 = 12;

/// Approximate width of `s` in pixels at `px` (sans-serif; no font metrics in the SVG backend).
fn text_w(s: &str, px: u32) -> u32 {
    (s.chars().count() as f64 * px as f64 * 0.56).ceil() as u32
}

/// `s` shortened in the middle to at most `max` characters.
pub fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max || max < 5 {
        return s.to_string();
    }
    let keep = max - 1;
    let head: String = s.chars().take(keep / 2).collect();
    let tail: String = s.chars().skip(n - (keep - keep / 2)).collect();
    format!("{head}…{tail}")
}

/// `s` wrapped into lines of at most `width` characters (at spaces when possible), at most
/// `max_lines` lines (the last shortened).
pub fn wrap(s: &str, width: usize, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        let mut w = word.to_string();
        loop {
            let sep = usize::from(!cur.is_empty());
            if cur.chars().count() + sep + w.chars().count() <= width {
                if sep == 1 {
                    cur.push(' ');
                }
                cur.push_str(&w);
                break;
            }
            if !cur.is_empty() && w.chars().count() <= width {
                lines.push(std::mem::take(&mut cur));
                continue;
            }
            if !cur.is_empty() {
                // A word longer than a line: fill this line with its head.
                let room = width.saturating_sub(cur.chars().count() + 1);
                if room >= 8 {
                    cur.push(' ');
                    cur.extend(w.chars().take(room));
                    w = w.chars().skip(room).collect();
                }
                lines.push(std::mem::take(&mut cur));
                continue;
            }
            // A word longer than a line: cut it.
            let head: String = w.chars().take(width).collect();
            w = w.chars().skip(width).collect();
            lines.push(head);
            if w.is_empty() {
                break;
            }
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    if lines.len() > max_lines {
        let rest = lines[max_lines - 1..].join(" ");
        lines.truncate(max_lines - 1);
        lines.push(shorten(&rest, width));
    }
    lines
}

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Add `<title>` (the tooltip) right after the `<svg …>` element opens.
fn with_tooltip(svg: String, title: &str) -> String {
    match svg.find("<svg").and_then(|i| svg[i..].find('>').map(|j| i + j + 1)) {
        Some(at) => format!("{}\n<title>{}</title>{}", &svg[..at], escape_xml(title), &svg[at..]),
        None => svg,
    }
}

/// The header of a chart: the title (shortened to the width) and, when it had to be
/// shortened, the whole title wrapped below it. Returns the header's height.
fn header_lines(title: &str, width: u32) -> (String, Vec<String>) {
    let max = (width.saturating_sub(30) as f64 / (TITLE_PX as f64 * 0.56)) as usize;
    let caption = shorten(title, max.max(10));
    let sub = if caption != title {
        wrap(title, (width.saturating_sub(30) as f64 / (SUB_PX as f64 * 0.56)) as usize, 3)
    } else {
        Vec::new()
    };
    (caption, sub)
}

fn header_height(sub: &[String]) -> u32 {
    12 + TITLE_PX + 6 + sub.len() as u32 * (SUB_PX + 4) + 8
}

fn draw_header<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    sub: &[String],
) -> anyhow::Result<()> {
    let style = TextStyle::from(("sans-serif", TITLE_PX).into_font()).pos(Pos::new(HPos::Left, VPos::Top));
    area.draw(&Text::new(caption.to_string(), (15, 12), style)).map_err(err)?;
    let small = TextStyle::from(("sans-serif", SUB_PX).into_font())
        .color(&RGBColor(90, 90, 90))
        .pos(Pos::new(HPos::Left, VPos::Top));
    for (i, l) in sub.iter().enumerate() {
        let y = 12 + TITLE_PX as i32 + 6 + i as i32 * (SUB_PX as i32 + 4);
        area.draw(&Text::new(l.clone(), (15, y), small.clone())).map_err(err)?;
    }
    Ok(())
}

fn draw_legend(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    entries: &[(String, RGBColor, LegendShape)],
) -> anyhow::Result<()> {
    let style = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, color, shape)) in entries.iter().enumerate() {
        let y = 40 + i as i32 * 20;
        let x = 12;
        match shape {
            LegendShape::Line(w) => {
                area.draw(&PathElement::new([(x, y), (x + 22, y)], color.stroke_width(*w))).map_err(err)?;
            }
            LegendShape::Dot => {
                area.draw(&Circle::new((x + 11, y), 4, color.filled())).map_err(err)?;
            }
            LegendShape::Ring => {
                area.draw(&Circle::new((x + 11, y), 5, color.stroke_width(2))).map_err(err)?;
            }
            LegendShape::Box => {
                area.draw(&Rectangle::new([(x + 4, y - 6), (x + 18, y + 6)], color.filled())).map_err(err)?;
            }
        }
        area.draw(&Text::new(label.clone(), (x + 30, y), style.clone())).map_err(err)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum LegendShape {
    Line(u32),
    Dot,
    Ring,
    Box,
}

/// Whether thread counts go on a log₂ axis: all powers of two, at least three of them, up to 4 or more.
fn log2_axis(ns: &[u32]) -> bool {
    ns.len() >= 3 && ns.iter().all(|n| n.is_power_of_two()) && ns.iter().max().is_some_and(|&m| m >= 4)
}

/// Integer labels only: `x` when it is (close to) a whole number that is a multiple of `step`.
fn int_label(x: f64, step: u32) -> String {
    let r = x.round();
    if (x - r).abs() < 1e-6 && r >= 0.0 && (r as u32) % step.max(1) == 0 {
        format!("{}", r as i64)
    } else {
        String::new()
    }
}

/// The largest speedup the chart shows: the ideal line's points (speedup = N at every measured
/// N) stay visible, and so do the measured ones.
fn speedup_axis_max(r: &ScaleResult) -> f64 {
    let max_n = r.points.iter().map(|p| p.threads).max().unwrap_or(1).max(1) as f64;
    // The predicted curve's points; its intervals are clipped at the top instead.
    let predicted = r.points.iter().filter_map(|p| p.without.map(|w| w.factor)).filter(|h| h.is_finite());
    r.points.iter().filter_map(|p| p.speedup_max.or(p.speedup)).chain(predicted).fold(max_n, f64::max)
}

/// The scaling chart's legend: the ideal line, the fits, the measured points, the prediction
/// without the top contention (`with_prediction`) and the oversubscribed marker.
fn scaling_legend(r: &ScaleResult, with_prediction: bool) -> Vec<(String, RGBColor, LegendShape)> {
    let mut legend: Vec<(String, RGBColor, LegendShape)> =
        vec![("ideal (speedup = N)".into(), RGBColor(128, 128, 128), LegendShape::Line(1))];
    if let Some(u) = r.usl {
        legend.push((format!("USL fit: σ = {:.3}, κ = {:.4}", u.sigma, u.kappa), BLUE, LegendShape::Line(2)));
    }
    if let Some(a) = r.amdahl {
        legend.push((
            format!("Amdahl fit: serial {:.3}", a.serial_fraction),
            RGBColor(0, 160, 0),
            LegendShape::Line(2),
        ));
    }
    legend.push(("measured (median, min–max)".into(), RED, LegendShape::Dot));
    if let (Some(c), true) = (&r.without, with_prediction) {
        legend.push((format!("predicted without {c}"), RGBColor(230, 140, 0), LegendShape::Dot));
    }
    let over = r.points.iter().any(|p| p.oversubscribed && p.speedup.is_some());
    if over {
        legend.push((format!("oversubscribed (N > {} CPUs)", r.online_cpus), RED, LegendShape::Ring));
    }
    legend
}

/// Speedup vs threads: the ideal line, measured medians with their spread, fitted curves.
pub fn scaling_svg(r: &ScaleResult, title: &str) -> anyhow::Result<String> {
    let ns: Vec<u32> = r.points.iter().map(|p| p.threads).collect();
    let log2 = log2_axis(&ns);
    let max_n = ns.iter().copied().max().unwrap_or(1).max(1) as f64;
    let fx = move |n: f64| if log2 { n.max(1e-9).log2() } else { n };
    let (x_lo, x_hi) = if log2 { (-0.25, max_n.log2() + 0.25) } else { (0.0, max_n + (max_n * 0.04).max(0.4)) };
    let step = if log2 {
        1
    } else {
        [1u32, 2, 5, 10, 20, 50, 100, 200, 500].into_iter().find(|s| max_n / *s as f64 <= 12.0).unwrap_or(1000)
    };
    let max_s = speedup_axis_max(r);

    let without: Vec<_> = r.points.iter().filter_map(|p| Some((p.threads, p.without?))).collect();
    let legend = scaling_legend(r, !without.is_empty());
    let legend_w = legend.iter().map(|l| text_w(&l.0, 12)).max().unwrap_or(100) + 50;
    let plot_w = (360 + 50 * ns.len() as u32).clamp(480, 760);
    let width = plot_w + legend_w;
    let (caption, sub) = header_lines(title, width);
    let head_h = header_height(&sub);
    let height = head_h + PLOT_H;

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, rest) = root.split_vertically(head_h);
        draw_header(&top, &caption, &sub)?;
        let (plot, side) = rest.split_horizontally(plot_w);
        let y_top = max_s * 1.08 + 0.2;
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(x_lo..x_hi, 0.0..y_top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.08))
            .x_labels(if log2 { (max_n.log2() as usize + 1) * 4 } else { (max_n as usize / step as usize + 1) * 2 + 2 })
            .x_label_formatter(&|x| {
                if log2 {
                    let s = int_label(*x, 1);
                    if s.is_empty() {
                        s
                    } else {
                        format!("{}", 1u64 << s.parse::<u32>().unwrap_or(0))
                    }
                } else {
                    int_label(*x, step)
                }
            })
            .y_labels(8)
            .y_label_formatter(&|y| format!("{y:.1}"))
            .x_desc(if log2 { "threads (N, log₂ scale)" } else { "threads (N)" })
            .y_desc(if r.scaling == "weak" { "speedup (weak: N·T1/TN)" } else { "speedup (T1/TN)" })
            .draw()
            .map_err(err)?;
        let grid: Vec<f64> = (0..=200).map(|i| 1.0 + (max_n - 1.0).max(0.0) * i as f64 / 200.0).collect();
        let ideal: Vec<(f64, f64)> = if log2 {
            grid.iter().filter(|&&n| n <= y_top).map(|&n| (fx(n), n)).collect()
        } else {
            vec![(0.0, 0.0), (max_n.min(y_top), max_n.min(y_top))]
        };
        chart.draw_series(LineSeries::new(ideal, RGBColor(128, 128, 128).stroke_width(1))).map_err(err)?;
        if let Some(u) = r.usl {
            chart
                .draw_series(LineSeries::new(grid.iter().map(|&n| (fx(n), u.speedup(n))), BLUE.stroke_width(2)))
                .map_err(err)?;
        }
        if let Some(a) = r.amdahl {
            chart
                .draw_series(LineSeries::new(
                    grid.iter().map(|&n| (fx(n), a.speedup(n))),
                    RGBColor(0, 160, 0).stroke_width(2),
                ))
                .map_err(err)?;
        }
        draw_measured(&mut chart, r, &without, &fx, y_top)?;
        draw_legend(&side, &legend)?;
        root.present().map_err(err)?;
    }
    Ok(with_tooltip(out, title))
}

/// The scaling chart's data on its axes: the prediction without the top contention (orange,
/// with its interval) and the measured points (red; hollow where oversubscribed).
fn draw_measured(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    r: &ScaleResult,
    without: &[(u32, analysis::gain::Gain)],
    fx: &dyn Fn(f64) -> f64,
    y_top: f64,
) -> anyhow::Result<()> {
    if !without.is_empty() {
        let orange = RGBColor(230, 140, 0);
        chart
            .draw_series(LineSeries::new(
                without.iter().map(|(n, g)| (fx(*n as f64), g.factor)),
                orange.stroke_width(1),
            ))
            .map_err(err)?;
        chart
            .draw_series(without.iter().map(|(n, g)| {
                ErrorBar::new_vertical(fx(*n as f64), g.low, g.factor, g.high.min(y_top), orange.filled(), 6)
            }))
            .map_err(err)?;
    }
    let measured: Vec<_> = r.points.iter().filter(|p| p.speedup.is_some()).collect();
    chart
        .draw_series(measured.iter().map(|p| {
            let n = fx(p.threads as f64);
            let s = p.speedup.unwrap_or(0.0);
            ErrorBar::new_vertical(n, p.speedup_min.unwrap_or(s), s, p.speedup_max.unwrap_or(s), RED.filled(), 8)
        }))
        .map_err(err)?;
    chart
        .draw_series(
            measured
                .iter()
                .filter(|p| !p.oversubscribed)
                .map(|p| Circle::new((fx(p.threads as f64), p.speedup.unwrap_or(0.0)), 5, RED.filled())),
        )
        .map_err(err)?;
    chart
        .draw_series(
            measured
                .iter()
                .filter(|p| p.oversubscribed)
                .map(|p| Circle::new((fx(p.threads as f64), p.speedup.unwrap_or(0.0)), 6, RED.stroke_width(2))),
        )
        .map_err(err)?;
    Ok(())
}

/// Stacked bars: share of thread time per category at each thread count.
pub fn breakdown_svg(r: &ScaleResult, title: &str) -> anyhow::Result<String> {
    let n = r.points.len().max(1);
    let mut cats: Vec<String> = Vec::new();
    for c in Category::ALL {
        if r.points.iter().any(|p| p.categories.get(c.name()).is_some_and(|&v| v > 0.0)) {
            cats.push(c.name().to_string());
        }
    }
    // Legend top to bottom in the order the bars stack, top first.
    let legend: Vec<(String, RGBColor, LegendShape)> =
        cats.iter().rev().map(|c| (c.clone(), category_rgb(c), LegendShape::Box)).collect();
    let legend_w = legend.iter().map(|l| text_w(&l.0, 12)).max().unwrap_or(60) + 50;
    let plot_w = (110 + 70 * n as u32).clamp(300, 900);
    let width = (plot_w + legend_w).max(480);
    let plot_w = width - legend_w;
    let (caption, sub) = header_lines(title, width);
    let head_h = header_height(&sub);
    let height = head_h + PLOT_H;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, rest) = root.split_vertically(head_h);
        draw_header(&top, &caption, &sub)?;
        let (plot, side) = rest.split_horizontally(plot_w);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(0.4..n as f64 + 0.6, 0.0..100.0)
            .map_err(err)?;
        let labels: Vec<String> = r.points.iter().map(|p| p.threads.to_string()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.08))
            .x_labels(n * 2 + 2)
            .x_label_formatter(&|x| {
                let s = int_label(*x, 1);
                s.parse::<usize>().ok().and_then(|i| labels.get(i.wrapping_sub(1)).cloned()).unwrap_or_default()
            })
            .y_labels(6)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc("threads (N)")
            .y_desc("share of thread time (%)")
            .draw()
            .map_err(err)?;
        for cat in &cats {
            let color = category_rgb(cat);
            let rects: Vec<Rectangle<(f64, f64)>> = r
                .points
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let below: f64 = cats
                        .iter()
                        .take_while(|c| *c != cat)
                        .map(|c| p.categories.get(c).copied().unwrap_or(0.0) * 100.0)
                        .sum();
                    let h = p.categories.get(cat).copied().unwrap_or(0.0) * 100.0;
                    let x = i as f64 + 1.0;
                    Rectangle::new([(x - 0.3, below), (x + 0.3, below + h)], color.filled())
                })
                .collect();
            chart.draw_series(rects).map_err(err)?;
        }
        draw_legend(&side, &legend)?;
        root.present().map_err(err)?;
    }
    Ok(with_tooltip(out, title))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_titles_are_shortened_in_the_middle_and_wrapped() {
        let t = "ftprof scale: /opt/venvs/app-build-cache/cpython-3.13.5-ft/bin/python3.13t tests/workloads/scale_serialized.py {n} 2000000";
        let s = shorten(t, 40);
        assert_eq!(s.chars().count(), 40);
        assert!(s.starts_with("ftprof scale:") && s.ends_with("2000000") && s.contains('…'));
        let lines = wrap(t, 50, 3);
        assert!(lines.len() <= 3 && lines.iter().all(|l| l.chars().count() <= 50), "{lines:?}");
        assert_eq!(lines.join(" ").replace(' ', ""), t.replace(' ', ""));
        assert_eq!(wrap("a b", 10, 3), ["a b"]);
    }

    #[test]
    fn the_speedup_axis_keeps_the_ideal_points_and_the_measured_ones() {
        let result = |pts: &[(u32, f64)]| ScaleResult {
            points: pts
                .iter()
                .map(|&(threads, s)| analysis::scaling::ScalePoint { threads, speedup: Some(s), ..Default::default() })
                .collect(),
            ..Default::default()
        };
        // The case: 1, 2, 4 threads that barely scale; the axis used to stop at 2.5.
        assert_eq!(speedup_axis_max(&result(&[(1, 1.0), (2, 0.9), (4, 1.2)])), 4.0);
        // Superlinear points above the ideal stay visible.
        assert_eq!(speedup_axis_max(&result(&[(1, 1.0), (2, 2.5)])), 2.5);
        assert_eq!(speedup_axis_max(&result(&[])), 1.0);
        // The curve predicted without the top contention stays visible too.
        let mut r = result(&[(1, 1.0), (2, 1.1)]);
        r.points[1].without = Some(analysis::gain::Gain { factor: 2.4, low: 2.2, high: 60.0 });
        assert_eq!(speedup_axis_max(&r), 2.4);
    }

    #[test]
    fn log2_axis_only_for_powers_of_two() {
        assert!(log2_axis(&[1, 2, 4, 8]));
        assert!(!log2_axis(&[1, 2, 3, 4]));
        assert!(!log2_axis(&[1, 2]));
        assert_eq!(int_label(2.0, 1), "2");
        assert_eq!(int_label(2.5, 1), "");
        assert_eq!(int_label(4.0, 2), "4");
        assert_eq!(int_label(3.0, 2), "");
    }
}
