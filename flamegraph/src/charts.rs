//! SVG charts of `ftprof scale` (plotters): speedup against ideal with the fitted curves, and the
//! time breakdown per thread count.

use analysis::scaling::ScaleResult;
use analysis::Category;
use plotters::prelude::*;

fn category_rgb(name: &str) -> RGBColor {
    let c = Category::ALL.iter().find(|c| c.name() == name).copied();
    let col = match c {
        Some(Category::Python) => (80, 160, 230),
        Some(Category::Native) => (235, 140, 60),
        Some(c) => {
            let k = super::category_color(c);
            (k.r, k.g, k.b)
        }
        None => (150, 150, 150),
    };
    RGBColor(col.0, col.1, col.2)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart failed: {e}")
}

/// Speedup vs threads: the ideal line, measured medians with their spread, fitted curves.
pub fn scaling_svg(r: &ScaleResult, title: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let max_n = r.points.iter().map(|p| p.threads).max().unwrap_or(1) as f64;
        let max_s = r.points.iter().filter_map(|p| p.speedup_max.or(p.speedup)).fold(max_n, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_n * 1.05 + 0.5, 0.0..max_s * 1.1 + 0.2)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("threads (N)")
            .y_desc(if r.scaling == "weak" { "speedup (weak: N·T1/TN)" } else { "speedup (T1/TN)" })
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (max_n, max_n)], BLACK.mix(0.5).stroke_width(1)))
            .map_err(err)?
            .label("ideal")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
        let samples: Vec<f64> = (0..=200).map(|i| 1.0 + (max_n - 1.0).max(0.0) * i as f64 / 200.0).collect();
        if let Some(u) = r.usl {
            chart
                .draw_series(LineSeries::new(samples.iter().map(|&n| (n, u.speedup(n))), BLUE.stroke_width(2)))
                .map_err(err)?
                .label(format!("USL fit: σ = {:.3}, κ = {:.4}", u.sigma, u.kappa))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        }
        if let Some(a) = r.amdahl {
            chart
                .draw_series(LineSeries::new(samples.iter().map(|&n| (n, a.speedup(n))), GREEN.stroke_width(1)))
                .map_err(err)?
                .label(format!("Amdahl fit: serial fraction {:.3}", a.serial_fraction))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN));
        }
        let measured = r.points.iter().filter(|p| p.speedup.is_some());
        chart
            .draw_series(measured.clone().map(|p| {
                let n = p.threads as f64;
                let s = p.speedup.unwrap_or(0.0);
                ErrorBar::new_vertical(n, p.speedup_min.unwrap_or(s), s, p.speedup_max.unwrap_or(s), RED.filled(), 8)
            }))
            .map_err(err)?;
        chart
            .draw_series(
                measured
                    .clone()
                    .filter(|p| !p.oversubscribed)
                    .map(|p| Circle::new((p.threads as f64, p.speedup.unwrap_or(0.0)), 5, RED.filled())),
            )
            .map_err(err)?
            .label("measured (median, min-max)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
        if measured.clone().any(|p| p.oversubscribed) {
            chart
                .draw_series(
                    measured
                        .filter(|p| p.oversubscribed)
                        .map(|p| Circle::new((p.threads as f64, p.speedup.unwrap_or(0.0)), 6, RED.stroke_width(2))),
                )
                .map_err(err)?
                .label(format!("oversubscribed (N > {} CPUs)", r.online_cpus))
                .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// Stacked bars: share of thread time per category at each thread count.
pub fn breakdown_svg(r: &ScaleResult, title: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = r.points.len().max(1);
        let mut cats: Vec<String> = Vec::new();
        for c in Category::ALL {
            if r.points.iter().any(|p| p.categories.get(c.name()).is_some_and(|&v| v > 0.0)) {
                cats.push(c.name().to_string());
            }
        }
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n as f64 + 2.2, 0.0..100.0)
            .map_err(err)?;
        let labels: Vec<String> = r.points.iter().map(|p| p.threads.to_string()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n + 3)
            .x_label_formatter(&|x| {
                let i = x.round() as i64 - 1;
                if (x - x.round()).abs() < 0.01 && i >= 0 && (i as usize) < labels.len() {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            })
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
            chart
                .draw_series(rects)
                .map_err(err)?
                .label(cat.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}
