//! The bench's charts, as SVG files the README shows.

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// A line through `points`, with its points marked; the x axis is logarithmic when
/// the points span more than a hundredfold.
pub fn line(path: &Path, title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) {
    if points.is_empty() {
        return;
    }
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (x0, x1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let y1 = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let y = 0.0..y1.max(1e-9);
    if x1 > x0 * 100.0 {
        let chart = builder.build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), y);
        draw(chart.unwrap(), x_label, y_label, points);
    } else {
        let pad = (x1 - x0).max(1.0) * 0.1;
        let chart = builder.build_cartesian_2d(x0 - pad..x1 + pad, y);
        draw(chart.unwrap(), x_label, y_label, points);
    }
    root.present().unwrap();
}

fn draw<'a, X>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
) where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .unwrap();
    let style = ShapeStyle::from(&BLUE).stroke_width(2);
    chart
        .draw_series(LineSeries::new(points.iter().copied(), style))
        .unwrap();
    chart
        .draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .unwrap();
}
