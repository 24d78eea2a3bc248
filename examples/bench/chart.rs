//! The bench's charts, as SVG files the README shows.

use std::path::Path;

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
    let style = |c: &RGBColor| ShapeStyle::from(c).stroke_width(2);
    if x1 > x0 * 100.0 {
        let mut chart = builder
            .build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), 0.0..y1.max(1e-9))
            .unwrap();
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .unwrap();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style(&BLUE)))
            .unwrap();
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
            .unwrap();
    } else {
        let pad = (x1 - x0).max(1.0) * 0.1;
        let mut chart = builder
            .build_cartesian_2d(x0 - pad..x1 + pad, 0.0..y1.max(1e-9))
            .unwrap();
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .unwrap();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style(&BLUE)))
            .unwrap();
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
            .unwrap();
    }
    root.present().unwrap();
}
