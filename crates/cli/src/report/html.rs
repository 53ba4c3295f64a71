//! The report as one self-contained HTML page: inline CSS and SVG bar charts, no script, no
//! external resource, so it opens from a file without a network connection.

use std::fmt::Write;
use std::path::PathBuf;

use super::Report;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` as `1,234,567`.
fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Vertical bars, one per label (months).
fn columns(title: &str, bars: &[(String, u64)], colour: &str) -> String {
    let (w, h, top, bottom, left) = (760.0, 260.0, 20.0, 40.0, 70.0);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let slot = (w - left) / bars.len().max(1) as f64;
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg role="img" aria-label="{}" viewBox="0 0 {w} {h}" width="{w}" height="{h}">"#,
        esc(title),
        esc(title)
    );
    let plot = h - top - bottom;
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{w}" y2="{}" stroke="#888"/><text x="{}" y="{}" text-anchor="end" class="ax">{}</text>"##,
        h - bottom,
        h - bottom,
        left - 6.0,
        top + 10.0,
        num(max as u64)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let bh = plot * (*v as f64) / max;
        let x = left + slot * i as f64 + slot * 0.1;
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{colour}"><title>{}: {}</title></rect><text x="{:.1}" y="{}" text-anchor="middle" class="ax">{}</text>"#,
            h - bottom - bh,
            slot * 0.8,
            esc(label),
            num(*v),
            x + slot * 0.4,
            h - bottom + 16.0,
            esc(label)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Horizontal bars, one per label (reasons, categories).
fn rows(title: &str, bars: &[(String, u64)], colour: &str) -> String {
    let (w, row, left) = (760.0, 22.0, 250.0);
    let h = row * bars.len().max(1) as f64 + 10.0;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg role="img" aria-label="{}" viewBox="0 0 {w} {h}" width="{w}" height="{h}">"#,
        esc(title),
        esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = row * i as f64 + 5.0;
        let bw = (w - left - 90.0) * (*v as f64) / max;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="ax">{}</text><rect x="{left}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="{colour}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" class="ax">{}</text>"#,
            left - 6.0,
            y + 14.0,
            esc(label),
            row - 6.0,
            esc(label),
            num(*v),
            left + bw + 4.0,
            y + 14.0,
            num(*v)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The page.
pub(super) fn page(r: &Report, inputs: &[PathBuf]) -> String {
    let months: Vec<(String, u64)> = r
        .by_month
        .iter()
        .map(|m| (m.month.clone(), m.checks))
        .collect();
    let blocked: Vec<(String, u64)> = r
        .by_month
        .iter()
        .map(|m| (m.month.clone(), m.listings_blocked))
        .collect();
    let reasons: Vec<(String, u64)> = r
        .by_reason
        .0
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    let mut categories: Vec<(String, u64)> = r
        .by_category
        .iter()
        .map(|c| (c.product_code.clone(), c.listings_blocked))
        .collect();
    categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    categories.truncate(20);

    let t = &r.totals;
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>CCC listing checks: the regulator's report</h1>
<p class="src">From {} decision log file(s). Months are China time (UTC+8). Distinct counts are exact.</p>
<table class="totals"><tr><th>checks</th><th>distinct merchants</th><th>distinct listings blocked</th><th>bad requests</th></tr>
<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>"#,
        inputs.len(),
        num(t.checks),
        num(t.merchants),
        num(t.listings_blocked),
        num(t.bad_requests)
    );
    body.push_str(&columns("Checks per month", &months, "#3b6ea5"));
    body.push_str(&columns(
        "Distinct listings blocked per month",
        &blocked,
        "#b5403a",
    ));
    body.push_str(&rows("Checks by reason", &reasons, "#5a8f4e"));
    body.push_str(&rows(
        "Distinct listings blocked by product code (top 20)",
        &categories,
        "#b5403a",
    ));
    body.push_str("<h2>By month</h2><table><tr><th>month</th><th>checks</th><th>merchants</th><th>listings blocked</th></tr>");
    for m in &r.by_month {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.month),
            num(m.checks),
            num(m.merchants),
            num(m.listings_blocked)
        );
    }
    body.push_str("</table><h2>By decision</h2><table><tr><th>decision</th><th>checks</th></tr>");
    for (k, v) in &r.by_decision.0 {
        let _ = write!(body, "<tr><td>{k}</td><td>{}</td></tr>", num(*v));
    }
    body.push_str("</table><h2>By caller</h2><table><tr><th>caller</th><th>checks</th><th>listings blocked</th></tr>");
    for c in &r.by_client {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.client),
            num(c.checks),
            num(c.listings_blocked)
        );
    }
    body.push_str("</table><h2>By product code</h2><table><tr><th>product code</th><th>checks</th><th>listings blocked</th></tr>");
    for c in &r.by_category {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.product_code),
            num(c.checks),
            num(c.listings_blocked)
        );
    }
    body.push_str("</table>");
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cccgate report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 800px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 1em 0; }} figcaption {{ font-weight: bold; margin-bottom: 4px; }}
.ax {{ font-size: 11px; fill: #444; }} .src {{ color: #666; }}
</style></head><body>
{body}
</body></html>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_are_written_safely() {
        assert_eq!(num(0), "0");
        assert_eq!(num(1_718_000), "1,718,000");
        assert_eq!(num(999), "999");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
