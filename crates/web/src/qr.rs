//! QR codes as SVG, for coupon codes a till scans from the member's phone. `qrcodegen` is the
//! reference encoder (Nayuki's), one file without dependencies; the drawing is ours: one path
//! of unit squares with a four-module quiet zone.

use qrcodegen::{QrCode, QrCodeEcc};
use std::fmt::Write;

/// The SVG of `text`, or `None` if it is too long for a QR code.
pub fn svg(text: &str, label: &str) -> Option<String> {
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let size = qr.size();
    let border = 4;
    let dim = size + border * 2;
    let mut d = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                let _ = write!(d, "M{},{}h1v1h-1z", x + border, y + border);
            }
        }
    }
    let label = label
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;");
    Some(format!(
        r##"<svg class="qr" viewBox="0 0 {dim} {dim}" role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/><path d="{d}" fill="#000"/></svg>"##
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_coupon_code_becomes_a_square_svg() {
        let s = super::svg("FDL-ABCD-EFGH-JKMN", "coupon").unwrap_or_default();
        assert!(s.starts_with("<svg") && s.contains("viewBox=\"0 0 29 29\""));
        assert!(super::svg(&"x".repeat(10_000), "too long").is_none());
    }
}
