//! The PNG plots: an HPA's replicas and CPU over time with its scaling actions marked, a
//! stepped experiment's replicas and CPU over the whole window with its steps marked, and a
//! grid with one panel per step of a matrix.
//!
//! plotters draws into an RGB buffer (its bitmap backend) and the png crate encodes it, so
//! no image library is built. Text is rasterised by plotters' pure-Rust `ab_glyph` backend
//! from a TrueType font read at run time ([`load_font`]): no fontconfig or freetype.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::column::Column;
use crate::error::{Error, Result};
use crate::hpa::HpaTimeline;
use crate::steps::{DeploymentColumns, DeploymentKey, Step};
use crate::window::Window;

/// Fonts tried when `--font` is not given (Debian's fonts-dejavu-core first).
pub const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// The font family name the plots use.
const FAMILY: &str = "sans-serif";

/// The font registered for this process (plotters keeps fonts in a global table, for the
/// life of the process: read once, the bytes leaked once).
static FONT: OnceLock<PathBuf> = OnceLock::new();

/// Reads `path` (or the first of [`FONT_CANDIDATES`] that exists) and registers it for the
/// plots. Later calls keep the first font.
///
/// # Errors
/// [`Error::Font`] when the file cannot be read or is not a TrueType/OpenType font, or when
/// no candidate exists (install fonts-dejavu-core, or pass --font).
pub fn load_font(path: Option<&Path>) -> Result<&'static Path> {
    if let Some(loaded) = FONT.get() {
        return Ok(loaded);
    }
    let path = match path {
        Some(p) => p.to_owned(),
        None => FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Font {
                reason: format!(
                    "none of {} exists; install Debian's fonts-dejavu-core or pass --font FILE.ttf",
                    FONT_CANDIDATES.join(", ")
                ),
            })?,
    };
    let bytes = std::fs::read(&path).map_err(|e| Error::Font {
        reason: format!("{}: {e}", path.display()),
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| Error::Font {
        reason: format!("{}: not a TrueType or OpenType font", path.display()),
    })?;
    Ok(FONT.get_or_init(|| path))
}

/// Line colours, one per series drawn.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const UP: RGBColor = RGBColor(44, 160, 44);
const DOWN: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(150, 150, 150);

/// How to place the window on a plot's time axis.
#[derive(Debug, Clone, Copy)]
pub struct TimeAxis {
    /// The window.
    pub window: Window,
    /// Cluster seconds per second of the query API's clock.
    pub speed: f64,
}

impl TimeAxis {
    /// Minutes of cluster time since the window's start, at point `i`.
    fn minutes(&self, i: usize) -> f64 {
        i as f64 * self.window.resolution * self.speed / 60.0
    }

    fn label(&self) -> String {
        if self.speed == 1.0 {
            "minutes since the start".to_owned()
        } else {
            format!(
                "minutes since the start (cluster time; ran at {}x)",
                self.speed
            )
        }
    }
}

/// Draws into an RGB buffer and writes it as PNG to `path`.
fn render(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<()> {
    let fail = |reason: String| Error::Plot {
        path: path.to_owned(),
        reason,
    };
    let mut buffer = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        // plots are flat colours and lines: the best deflate with a filter chosen per row
        // makes them several times smaller than the defaults, for a few milliseconds more
        encoder.set_compression(png::Compression::Best);
        encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        let mut writer = encoder.write_header().map_err(|e| fail(e.to_string()))?;
        writer
            .write_image_data(&buffer)
            .map_err(|e| fail(e.to_string()))?;
    }
    std::fs::write(path, png_bytes).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

/// Contiguous runs of a column as `(minutes, value)` lines (a gap breaks the line).
fn runs(axis: &TimeAxis, column: &Column, scale: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut run = Vec::new();
    for (i, v) in column.iter().enumerate() {
        match v {
            Some(v) => run.push((axis.minutes(i), v * scale)),
            None if !run.is_empty() => out.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

fn highest(columns: &[&Column], scale: f64) -> f64 {
    columns
        .iter()
        .flat_map(|c| c.iter().flatten())
        .fold(0.0f64, |m, v| m.max(v * scale))
}

/// Draws one column as lines (one per run), with a legend entry.
fn line<DB: DrawingBackend, CT: plotters::coord::CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    axis: &TimeAxis,
    column: &Column,
    scale: f64,
    label: &str,
    style: ShapeStyle,
    dashed: bool,
) -> Result<(), String> {
    for (n, run) in runs(axis, column, scale).into_iter().enumerate() {
        let anno = if dashed {
            chart
                .draw_series(DashedLineSeries::new(run, 6, 4, style))
                .map_err(|e| e.to_string())?
        } else {
            chart
                .draw_series(LineSeries::new(run, style))
                .map_err(|e| e.to_string())?
        };
        if n == 0 {
            anno.label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    Ok(())
}

/// An HPA's plot: replicas (desired, current, min, max) above, CPU utilisation against its
/// target below, each scaling action a vertical line marked ▲/▼ with its new size.
///
/// # Errors
/// [`Error::Plot`] or [`Error::Write`].
pub fn hpa_png(path: &Path, size: (u32, u32), axis: &TimeAxis, t: &HpaTimeline) -> Result<()> {
    render(path, size, |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let end = axis
            .minutes(axis.window.points().saturating_sub(1))
            .max(1e-3);
        let title = format!("HPA {}/{}", t.key.namespace, t.key.name);
        let root = root.titled(&title, (FAMILY, 22)).map_err(|x| e(&x))?;
        let (top, bottom) = root.split_vertically((55).percent());
        let top_max = (highest(&[&t.desired, &t.current, &t.max], 1.0) + 1.0).ceil();
        let mut chart = ChartBuilder::on(&top)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..end, 0.0..top_max)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .y_desc("replicas")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_label_formatter(&|v| tick(*v))
            .label_style((FAMILY, 13))
            .draw()
            .map_err(|x| e(&x))?;
        line(
            &mut chart,
            axis,
            &t.max,
            1.0,
            "max",
            GREY.stroke_width(1),
            true,
        )?;
        line(
            &mut chart,
            axis,
            &t.min,
            1.0,
            "min",
            GREY.stroke_width(1),
            true,
        )?;
        line(
            &mut chart,
            axis,
            &t.desired,
            1.0,
            "desired",
            PALETTE[1].stroke_width(2),
            false,
        )?;
        line(
            &mut chart,
            axis,
            &t.current,
            1.0,
            "current",
            PALETTE[0].stroke_width(2),
            false,
        )?;
        // labels of actions closer than 4 % of the axis alternate between two heights
        let mut last_label: Option<(f64, bool)> = None;
        for ev in &t.events {
            let x = axis.minutes(ev.index);
            let lowered = match last_label {
                Some((at, low)) if x - at < end * 0.04 => !low,
                _ => false,
            };
            last_label = Some((x, lowered));
            let (colour, mark) = match ev.direction.as_str() {
                "up" => (UP, "▲"),
                "down" => (DOWN, "▼"),
                _ => (GREY, "●"),
            };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, top_max)],
                    colour.mix(0.6).stroke_width(1),
                )))
                .map_err(|x| e(&x))?;
            let text = format!("{mark}{}", crate::csv::number(ev.new_size, 0));
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (x, top_max * if lowered { 0.91 } else { 0.97 }),
                    (FAMILY, 13).into_font().color(&colour),
                )))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;

        let cpu_max = (highest(&[&t.utilization, &t.target], 1.0) * 1.15).max(10.0);
        let mut chart = ChartBuilder::on(&bottom)
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..end, 0.0..cpu_max)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc(axis.label())
            .y_desc("CPU % of requests")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_label_formatter(&|v| tick(*v))
            .label_style((FAMILY, 13))
            .draw()
            .map_err(|x| e(&x))?;
        line(
            &mut chart,
            axis,
            &t.target,
            1.0,
            "target",
            GREY.stroke_width(2),
            true,
        )?;
        line(
            &mut chart,
            axis,
            &t.utilization,
            1.0,
            "utilisation",
            PALETTE[3].stroke_width(2),
            false,
        )?;
        for ev in &t.events {
            let x = axis.minutes(ev.index);
            let colour = if ev.direction == "down" { DOWN } else { UP };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, cpu_max)],
                    colour.mix(0.6).stroke_width(1),
                )))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))
    })
}

/// An axis label: whole numbers without decimals, others with one.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The whole window of a stepped experiment: replicas of each plotted Deployment (available
/// solid, asked dashed) above, its CPU per pod in millicores below, each step's start a
/// vertical line numbered as in the step table.
///
/// # Errors
/// [`Error::Plot`] or [`Error::Write`].
pub fn timeline_png(
    path: &Path,
    size: (u32, u32),
    axis: &TimeAxis,
    steps: &[Step],
    deployments: &[(&DeploymentKey, &DeploymentColumns)],
    title: &str,
) -> Result<()> {
    render(path, size, |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let end = axis
            .minutes(axis.window.points().saturating_sub(1))
            .max(1e-3);
        let root = root.titled(title, (FAMILY, 20)).map_err(|x| e(&x))?;
        let (top, bottom) = root.split_vertically((55).percent());
        let (replicas_max, cpu_max) = deployment_y_ranges(deployments, axis);
        let mcores = 1000.0 / axis.speed;
        for (area, y_max, replicas) in [(&top, replicas_max, true), (&bottom, cpu_max, false)] {
            let mut chart = ChartBuilder::on(area)
                .margin(8)
                .x_label_area_size(if replicas { 28 } else { 36 })
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..end, 0.0..y_max)
                .map_err(|x| e(&x))?;
            let mut mesh = chart.configure_mesh();
            mesh.y_label_formatter(&|v| format!("{v:.0}"))
                .x_label_formatter(&|v| tick(*v))
                .label_style((FAMILY, 13));
            if replicas {
                mesh.y_desc("replicas");
            } else {
                mesh.y_desc("CPU per pod (millicores)").x_desc(axis.label());
            }
            mesh.draw().map_err(|x| e(&x))?;
            for step in steps {
                let x = axis.minutes(step.start);
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, 0.0), (x, y_max)],
                        GREY.mix(0.7).stroke_width(1),
                    )))
                    .map_err(|x| e(&x))?;
                if replicas {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            step.number.to_string(),
                            (x, y_max * 0.99),
                            (FAMILY, 11).into_font().color(&GREY),
                        )))
                        .map_err(|x| e(&x))?;
                }
            }
            for (n, (key, d)) in deployments.iter().enumerate() {
                let colour = PALETTE[n % PALETTE.len()];
                if replicas {
                    let asked = format!("{} asked", key.name);
                    let available = format!("{} available", key.name);
                    line(
                        &mut chart,
                        axis,
                        &d.spec,
                        1.0,
                        &asked,
                        colour.stroke_width(1),
                        true,
                    )?;
                    line(
                        &mut chart,
                        axis,
                        &d.available,
                        1.0,
                        &available,
                        colour.stroke_width(2),
                        false,
                    )?;
                } else {
                    line(
                        &mut chart,
                        axis,
                        &d.cpu_per_pod,
                        mcores,
                        &key.name,
                        colour.stroke_width(2),
                        false,
                    )?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FAMILY, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(&x))?;
        }
        Ok(())
    })
}

/// Rows and columns of a grid of `n` panels, wider than tall.
pub fn grid_shape(n: usize) -> (usize, usize) {
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    (n.div_ceil(cols).max(1), cols)
}

/// One panel per step: available replicas of each Deployment (solid, left axis) and its CPU
/// per pod in millicores (dashed, right axis) over the step.
///
/// # Errors
/// [`Error::Plot`] or [`Error::Write`].
pub fn steps_png(
    path: &Path,
    size: (u32, u32),
    axis: &TimeAxis,
    steps: &[Step],
    deployments: &[(&DeploymentKey, &DeploymentColumns)],
    title: &str,
) -> Result<()> {
    render(path, size, |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let root = root.titled(title, (FAMILY, 22)).map_err(|x| e(&x))?;
        let panels = root.split_evenly(grid_shape(steps.len()));
        let (replicas_max, cpu_max) = deployment_y_ranges(deployments, axis);
        let mcores = 1000.0 / axis.speed;
        for (step, panel) in steps.iter().zip(panels.iter()) {
            let local = TimeAxis {
                window: Window {
                    from: axis.window.time(step.start),
                    to: axis.window.time(step.end.saturating_sub(1)),
                    resolution: axis.window.resolution,
                },
                speed: axis.speed,
            };
            let end = local.minutes(step.end - step.start).max(1e-3);
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{}. {}", step.number, step.name), (FAMILY, 14))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(30)
                .right_y_label_area_size(36)
                .build_cartesian_2d(0.0..end, 0.0..replicas_max)
                .map_err(|x| e(&x))?
                .set_secondary_coord(0.0..end, 0.0..cpu_max);
            chart
                .configure_mesh()
                .x_labels(4)
                .y_labels(5)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style((FAMILY, 11))
                .draw()
                .map_err(|x| e(&x))?;
            chart
                .configure_secondary_axes()
                .y_labels(5)
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style((FAMILY, 11))
                .draw()
                .map_err(|x| e(&x))?;
            for (n, (key, d)) in deployments.iter().enumerate() {
                let colour = PALETTE[n % PALETTE.len()];
                let part = |c: &Column| -> Column {
                    c.get(step.start..step.end).unwrap_or_default().to_vec()
                };
                for run in runs(&local, &part(&d.available), 1.0) {
                    chart
                        .draw_series(LineSeries::new(run, colour.stroke_width(2)))
                        .map_err(|x| e(&x))?;
                }
                for run in runs(&local, &part(&d.cpu_per_pod), mcores) {
                    chart
                        .draw_secondary_series(DashedLineSeries::new(
                            run,
                            4,
                            3,
                            colour.stroke_width(1),
                        ))
                        .map_err(|x| e(&x))?;
                }
                if step.number == 1 {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            key.name.clone(),
                            (end * 0.05, replicas_max * (0.92 - 0.1 * n as f64)),
                            (FAMILY, 12).into_font().color(&colour),
                        )))
                        .map_err(|x| e(&x))?;
                }
            }
        }
        Ok(())
    })
}

/// The y ranges the deployment charts share: replicas (the highest asked or available, plus
/// one) and CPU per pod in millicores (15 % headroom, at least 10 m).
fn deployment_y_ranges(
    deployments: &[(&DeploymentKey, &DeploymentColumns)],
    axis: &TimeAxis,
) -> (f64, f64) {
    let replicas_max = (deployments
        .iter()
        .map(|(_, d)| highest(&[&d.available, &d.spec], 1.0))
        .fold(0.0, f64::max)
        + 1.0)
        .ceil();
    let mcores = 1000.0 / axis.speed;
    let cpu_max = (deployments
        .iter()
        .map(|(_, d)| highest(&[&d.cpu_per_pod], mcores))
        .fold(0.0, f64::max)
        * 1.15)
        .max(10.0);
    (replicas_max, cpu_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_hold_every_panel() {
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(5), (2, 3));
        assert_eq!(grid_shape(16), (4, 4));
        assert_eq!(grid_shape(17), (4, 5));
    }

    #[test]
    fn a_missing_font_file_is_named() {
        let err = load_font(Some(Path::new("/nonexistent/font.ttf"))).map(|_| ());
        // a font registered by another test in this process is kept; otherwise the path is named
        if FONT.get().is_none() {
            assert!(
                matches!(&err, Err(Error::Font { reason }) if reason.contains("/nonexistent/font.ttf")),
                "{err:?}"
            );
        }
    }
}
