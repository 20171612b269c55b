//! The flood benchmark's plot: softirq CPU per received flood packet and
//! legit connect p99 against the flood rate, setups (b)-(e) under SYN
//! floods (lines) and (b), (e) under a full-rate ACK flood (triangles),
//! drawn with plotters into a PNG.

use std::path::Path;

use anyhow::{Context as _, Result};
use plotters::prelude::*;
use serde_json::Value;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn success_vs_rate(bench: &Value, out: &Path) -> Result<()> {
    let font = std::fs::read(FONT).with_context(|| format!("reading {FONT} (Debian package fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;
    let points = bench["points"].as_array().context("points")?;
    let acks: Vec<Value> = bench["ack_points"].as_array().cloned().unwrap_or_default();
    let every = || points.iter().chain(acks.iter()).filter(|p| p["setup"] != "a");
    let max_rate = every().filter_map(|p| p["received_pps"].as_f64()).fold(0.0, f64::max) / 1000.0;
    let root = BitMapBackend::new(out, (1200, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    // (b), (d), (e) as the issue compares them; (c) for reference.
    let setups = [
        ("b", "(b) kernel default syncookies", BLUE),
        ("c", "(c) tcpguard drop", GREEN),
        ("d", "(d) tcpguard auto, kernel cookies", MAGENTA),
        ("e", "(e) tcpguard attack mode, XDP cookies", RED),
    ];
    let panels: [(&str, &str, &str, f64); 2] = [
        ("softirq_ns_per_rx", "Softirq CPU per received flood packet", "softirq ns / received packet", 1.0),
        ("p99_ms", "Legit connect p99", "p99 connect latency (ms)", 1.0),
    ];
    for (area, (key, caption, ydesc, _)) in [left, right].iter().zip(panels) {
        let value = |p: &Value| if key == "p99_ms" { p["legit"]["p99_ms"].as_f64() } else { p[key].as_f64() };
        let ymax = every().filter_map(value).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..(max_rate * 1.08).max(1.0), 0.0..ymax.max(1.0))?;
        chart
            .configure_mesh()
            .x_desc("flood received (thousand packets/s)")
            .y_desc(ydesc)
            .label_style(("sans-serif", 14))
            .draw()?;
        for (k, label, color) in setups {
            let mut series: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p["setup"] == k)
                .filter_map(|p| Some((p["received_pps"].as_f64()? / 1000.0, value(p)?)))
                .collect();
            series.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(series.iter().map(|&(x, y)| Circle::new((x, y), 4, color.filled())))?;
        }
        for (k, label, color) in [("b", "ACK flood: (b) kernel alone", BLUE), ("e", "ACK flood: (e) tcpguard", RED)] {
            let at: Vec<(f64, f64)> = acks
                .iter()
                .filter(|p| p["setup"] == k)
                .filter_map(|p| Some((p["received_pps"].as_f64()? / 1000.0, value(p)?)))
                .collect();
            chart
                .draw_series(at.iter().map(|&(x, y)| TriangleMarker::new((x, y), 9, color.filled())))?
                .label(label)
                .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
