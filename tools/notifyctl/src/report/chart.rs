//! Line charts as inline SVG: axes with round ticks, one polyline per series, escaped labels.

use std::fmt::Write as _;

pub(super) const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// One line of a plot.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step of 1, 2 or 5 × 10^k giving about `n` ticks over `span`.
pub(super) fn nice_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    }
}

pub(super) fn fmt_tick(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

/// A line chart as an SVG element.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (760.0, 300.0);
    let (left, right, top, bottom) = (64.0, 170.0, 30.0, 44.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    for (x, y) in pts {
        if x.is_finite() {
            x_max = x_max.max(*x);
        }
        if y.is_finite() {
            y_max = y_max.max(*y);
        }
    }
    let x_max = if x_max <= 0.0 { 1.0 } else { x_max };
    let y_step = nice_step(if y_max <= 0.0 { 1.0 } else { y_max }, 5.0);
    let y_max = (y_max / y_step).ceil().max(1.0) * y_step;
    let x_step = nice_step(x_max, 8.0);
    let sx = |x: f64| left + pw * x / x_max;
    let sy = |y: f64| top + ph - ph * y / y_max;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}" font-family="sans-serif" font-size="11"><rect width="{w}" height="{h}" fill="#fff"/><text x="{left}" y="18" font-size="13" font-weight="bold">{t}</text>"##,
        t = esc(title)
    );
    let mut y = 0.0;
    while y <= y_max + 1e-9 {
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e5e5e5"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            x2 = left + pw,
            yy = sy(y),
            tx = left - 6.0,
            ty = sy(y) + 4.0,
            v = fmt_tick(y)
        );
        y += y_step;
    }
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{y1}" y2="{y2}" stroke="#999"/><text x="{xx:.1}" y="{ty}" text-anchor="middle">{v}</text>"##,
            xx = sx(x),
            y1 = top + ph,
            y2 = top + ph + 4.0,
            ty = top + ph + 16.0,
            v = fmt_tick(x)
        );
        x += x_step;
    }
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{cx}" y="{by}" text-anchor="middle">{xl}</text><text transform="translate(14 {cy}) rotate(-90)" text-anchor="middle">{yl}</text>"##,
        cx = left + pw / 2.0,
        by = h - 6.0,
        cy = top + ph / 2.0,
        xl = esc(x_label),
        yl = esc(y_label)
    );
    for (i, series) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
                path.join(" ")
            );
        }
        let ly = top + 8.0 + 16.0 * i as f64;
        let lx = left + pw + 12.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" x2="{lx2}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{tx}" y="{ty}">{n}</text>"#,
            lx2 = lx + 16.0,
            tx = lx + 22.0,
            ty = ly + 4.0,
            n = esc(series.name)
        );
    }
    s.push_str("</svg>");
    s
}
