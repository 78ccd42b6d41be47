//! The SVG figure of `load_memory`: peak RSS and wall time against checkpoint size, one line
//! per loader, drawn with plotters' SVG backend (no fonts or bitmap libraries needed).

use std::path::Path;

use plotters::prelude::*;

/// The two panels, left to right: caption and y axis.
const PANELS: [(&str, &str); 2] = [
    ("peak RSS (VmHWM) vs model size", "peak RSS, GB"),
    ("wall time vs model size", "seconds"),
];

/// Line colours in loader order (matplotlib's tab10, its tab20 lights and black, readable on
/// white).
const COLORS: [RGBColor; 15] = [
    RGBColor(127, 127, 127),
    RGBColor(140, 86, 75),
    RGBColor(148, 103, 189),
    RGBColor(188, 189, 34),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(174, 199, 232),
    RGBColor(0, 0, 0),
    RGBColor(227, 119, 194),
    RGBColor(44, 160, 44),
    RGBColor(23, 190, 207),
    RGBColor(152, 223, 138),
    RGBColor(255, 187, 120),
    RGBColor(196, 156, 148),
];

/// One loader's points, `(checkpoint GB, value)` in size order, for each of [`PANELS`].
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Peak RSS in GB, then wall seconds.
    pub points: [Vec<(f64, f64)>; 2],
}

/// Draws the panels side by side into `path`.
pub fn draw(path: &Path, title: &str, lines: &[Line]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let all = |k: usize| lines.iter().flat_map(move |l| l.points[k].iter().copied());
    let x_max = all(0).map(|p| p.0).fold(0.1, f64::max) * 1.05;
    for (k, (area, (caption, y_desc))) in root.split_evenly((1, 2)).iter().zip(PANELS).enumerate() {
        let y_max = all(k).map(|p| p.1).fold(0.01, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("checkpoint size, GB")
            .y_desc(y_desc)
            .draw()?;
        for (i, line) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points = &line.points[k];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(line.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
