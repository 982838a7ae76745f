//! Plots (`--plot out.svg` or `out.png`): the latency percentile spectrum beside throughput over time.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

pub struct Chart<'a> {
    pub title: String,
    pub latency_label: &'a str,
    /// (percentile, ms) points, as [`crate::hist::Latency::spectrum`] gives them.
    pub spectrum: Vec<(f64, f64)>,
    pub rate_label: &'a str,
    /// Named (seconds, per second) series.
    pub series: Vec<(&'a str, Vec<(f64, f64)>)>,
}

pub fn write(path: &Path, chart: &Chart) -> anyhow::Result<()> {
    let size = (1400, 560);
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => draw(BitMapBackend::new(path, size).into_drawing_area(), chart),
        Some("svg") => draw(SVGBackend::new(path, size).into_drawing_area(), chart),
        _ => Err(anyhow!("--plot wants a .svg or .png file name")),
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Percentile → "nines" (90 % → 1, 99 % → 2, ...), so the tail gets room.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).max(1e-6).log10()
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(&c.title, ("sans-serif", 22)).map_err(err)?;
    let (left, right) = root.split_horizontally(700);

    let pts: Vec<(f64, f64)> = c.spectrum.iter().map(|(p, ms)| (nines(*p), *ms)).collect();
    let x_max = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_max = pts.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut lat = ChartBuilder::on(&left)
        .caption(c.latency_label, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    lat.configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_labels(7)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            let digits = format!("{p:.3}");
            format!("{}%", digits.trim_end_matches('0').trim_end_matches('.'))
        })
        .draw()
        .map_err(err)?;
    lat.draw_series(LineSeries::new(pts, BLUE.stroke_width(2))).map_err(err)?;

    let t_max = c.series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(1.0, f64::max);
    let r_max = c.series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.1;
    let mut thr = ChartBuilder::on(&right)
        .caption(c.rate_label, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..r_max)
        .map_err(err)?;
    thr.configure_mesh().x_desc("seconds").y_desc("per second").draw().map_err(err)?;
    let colors = [RED, GREEN, BLUE, MAGENTA];
    for (k, (name, s)) in c.series.iter().enumerate() {
        let color = colors[k % colors.len()];
        thr.draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    thr.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
