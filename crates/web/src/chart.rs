//! Charts as SVG, drawn here rather than by a script: a line chart of daily series with a
//! rounded scale, day labels and a legend. The page embeds the markup; colours come from CSS
//! classes (`series-0`, `series-1`, ...).

use std::fmt::Write;

pub struct Series<'a> {
    pub label: &'a str,
    pub values: Vec<i64>,
}

const W: f64 = 720.0;
const H: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A "nice" upper bound for the scale: 1, 2, 2.5 or 5 times a power of ten, at least `max`.
pub fn nice_max(max: i64) -> i64 {
    if max <= 0 {
        return 10;
    }
    let mut pow = 1i64;
    while let Some(next) = pow.checked_mul(10).filter(|n| *n <= max) {
        pow = next;
    }
    for m in [1, 2, 5, 10] {
        let v = pow.saturating_mul(m);
        if v >= max {
            return v;
        }
    }
    pow.saturating_mul(10)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `labels[i]` names day `i`; `format` writes scale values in the page's language.
pub fn line_chart(
    title: &str,
    labels: &[String],
    series: &[Series<'_>],
    format: impl Fn(i64) -> String,
) -> String {
    let n = labels.len().max(1);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0);
    let top = nice_max(max) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| {
        if n == 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: i64| TOP + plot_h - plot_h * (v.max(0) as f64) / top;
    let mut s = String::with_capacity(8 * 1024);
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    for k in 0..=5 {
        let v = (top as i64) / 5 * k;
        let yy = y(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 8.0,
            yy + 4.0,
            esc(&format(v))
        );
    }
    let step = (n / 6).max(1);
    for (i, label) in labels.iter().enumerate() {
        if i % step == 0 || i == n - 1 {
            let anchor = if i == n - 1 && n > 1 { "end" } else { "middle" };
            let _ = write!(
                s,
                r#"<text class="tick" x="{:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
                x(i),
                H - 8.0,
                esc(label)
            );
        }
    }
    for (k, ser) in series.iter().enumerate() {
        let mut d = String::new();
        for (i, v) in ser.values.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x(i),
                y(*v)
            );
        }
        let _ = write!(
            s,
            r#"<path class="line series-{k}" d="{d}"><title>{}</title></path>"#,
            esc(ser.label)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_round_up_to_a_nice_number() {
        assert_eq!(nice_max(0), 10);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(13), 20);
        assert_eq!(nice_max(4_100), 5_000);
        assert_eq!(nice_max(60_000), 100_000);
        assert_eq!(nice_max(i64::MAX), i64::MAX);
    }

    #[test]
    fn a_chart_draws_one_path_per_series_and_escapes_text() {
        let labels: Vec<String> = (1..=30).map(|d| d.to_string()).collect();
        let svg = line_chart(
            "a <b>",
            &labels,
            &[
                Series {
                    label: "issued",
                    values: (0..30).collect(),
                },
                Series {
                    label: "spent",
                    values: vec![5; 30],
                },
            ],
            |v| v.to_string(),
        );
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("a &lt;b&gt;") && !svg.contains("<b>"));
    }
}
