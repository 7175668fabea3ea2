//! Charts for the benchmark report: grouped bar charts as SVG.
//!
//! Decides: the layout (one group of bars per workload or fault, one bar
//! per side, the value over each bar, a legend) and the colours. Never what
//! is measured: callers pass the numbers.

use plotters::prelude::*;

/// A grouped bar chart: for each group (x), one bar per series.
pub struct Bars<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub groups: Vec<String>,
    /// (series name, one value per group)
    pub series: Vec<(String, Vec<f64>)>,
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
];

/// Drawing the chart failed.
#[derive(Debug, thiserror::Error)]
#[error("chart `{title}`: {message}")]
pub struct ChartError {
    title: String,
    message: String,
}

impl Bars<'_> {
    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String, ChartError> {
        let mut out = String::new();
        self.draw(&mut out).map_err(|message| ChartError {
            title: self.title.to_string(),
            message,
        })?;
        Ok(out)
    }

    fn draw(&self, out: &mut String) -> Result<(), String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let width = 160 + 120 * self.groups.len() as u32 * self.series.len().max(1) as u32 / 2;
        let root = SVGBackend::with_string(out, (width.max(640), 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let top = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            * 1.15;
        let n = self.series.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..self.groups.len() as f64, 0.0..top.max(1.0))
            .map_err(|x| e(&x))?;
        let groups = self.groups.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(self.groups.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-6 {
                    groups.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| short(*v))
            .y_desc(self.y_label)
            .draw()
            .map_err(|x| e(&x))?;
        for (s, (name, values)) in self.series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let bar = 0.8 / n;
            let rects = values.iter().enumerate().map(move |(g, v)| {
                let x0 = g as f64 + 0.1 + bar * s as f64;
                Rectangle::new([(x0, 0.0), (x0 + bar * 0.9, *v)], colour.filled())
            });
            chart
                .draw_series(rects)
                .map_err(|x| e(&x))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
            let labels = values.iter().enumerate().map(move |(g, v)| {
                let x0 = g as f64 + 0.1 + bar * s as f64;
                Text::new(short(*v), (x0, *v), ("sans-serif", 11).into_font())
            });
            chart.draw_series(labels).map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
        Ok(())
    }
}

/// 12345 → "12.3k", 250 → "250", 12.5 → "12.5", 0.805 → "0.81".
fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_chart_names_every_group_series_and_value() {
        let svg = Bars {
            title: "throughput",
            y_label: "ops/s",
            groups: vec!["es256".into(), "rs256".into()],
            series: vec![
                ("direct".into(), vec![12000.0, 900.0]),
                ("hsm-proxy".into(), vec![9000.0, 850.0]),
            ],
        }
        .svg()
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for text in [
            "throughput",
            "es256",
            "rs256",
            "direct",
            "hsm-proxy",
            "12.0k",
            "850",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
