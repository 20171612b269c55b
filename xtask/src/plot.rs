//! The flood benchmark's plot: legit success rate against flood rate for
//! setups (a)-(d), drawn with plotters into a PNG.

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
    let max_rate = points.iter().filter_map(|p| p["sent_pps"].as_f64()).fold(0.0, f64::max) / 1000.0;
    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Legit connection success under a spoofed SYN flood", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..(max_rate * 1.08).max(1.0), -2.0..105.0)?;
    chart
        .configure_mesh()
        .x_desc("flood rate (thousand SYN/s, as sent)")
        .y_desc("legit success (%)")
        .label_style(("sans-serif", 15))
        .draw()?;
    let setups = [("a", "(a) no protection (syncookies=0, backlog 16)", RED), ("b", "(b) kernel default syncookies", BLUE), ("c", "(c) tcpguard drop", GREEN), ("d", "(d) tcpguard auto", MAGENTA)];
    for (key, label, color) in setups {
        let series: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p["setup"] == key)
            .filter_map(|p| Some((p["sent_pps"].as_f64()? / 1000.0, p["legit"]["success"].as_f64()? * 100.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(series.iter().map(|&(x, y)| Circle::new((x, y), 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}
