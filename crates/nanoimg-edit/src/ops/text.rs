//! Captions: text in the bundled font (DejaVu Sans Bold, Bitstream Vera licence,
//! `fonts/LICENSE-DejaVu`), rasterised by `ab_glyph` through `imageproc`.

use crate::plan::{Place, Rgb};
use ab_glyph::{FontRef, PxScale};
use image::RgbImage;
use imageproc::drawing::{draw_text_mut, text_size};

static FONT: &[u8] = include_bytes!("../../fonts/DejaVuSans-Bold.ttf");

/// Draws `text` centred at `place`, its lines `size` of the image's height. Text wider than
/// the image (inside a 4 % margin) is wrapped at spaces, and shrunk if the lines still do not
/// fit. An outline in black or white (whichever contrasts with `color`) makes it read on any
/// background.
pub fn caption(img: &RgbImage, text: &str, place: Place, size: f32, color: Rgb) -> RgbImage {
    let font = FontRef::try_from_slice(FONT).expect("the bundled font is a valid TrueType file");
    let (w, h) = img.dimensions();
    let margin = (w.min(h) as f32 * 0.04).max(1.0);
    let (room_w, room_h) = (
        (w as f32 - 2.0 * margin).max(1.0),
        (h as f32 - 2.0 * margin).max(1.0),
    );
    let reach_of = |px: f32| (px / 18.0).ceil().max(1.0);
    let mut px = (size * h as f32).max(3.0);
    let mut lines = vec![text.trim().to_owned()];
    for _ in 0..24 {
        let width = |t: &str| text_size(PxScale::from(px), &font, t).0 as f32 + 2.0 * reach_of(px);
        lines = wrap(text, room_w, &width);
        let widest = lines.iter().map(|l| width(l)).fold(0.0, f32::max);
        let tall = lines.len() as f32 * px * LINE_SPACING;
        if (widest <= room_w && tall <= room_h) || px <= 3.0 {
            break;
        }
        px = (px * 0.9).max(3.0);
    }
    let scale = PxScale::from(px);
    let line_h = px * LINE_SPACING;
    let block = lines.len() as f32 * line_h;
    let top = match place {
        Place::Top => margin,
        Place::Center => (h as f32 - block) / 2.0,
        Place::Bottom => h as f32 - block - margin,
    };
    let [r, g, b] = color.0;
    let light = 0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b) > 128.0;
    let outline = image::Rgb(if light { [0, 0, 0] } else { [255, 255, 255] });
    let reach = reach_of(px) as i32;
    let mut out = img.clone();
    for (i, line) in lines.iter().enumerate() {
        let (tw, _) = text_size(scale, &font, line);
        let x = ((w as f32 - tw as f32) / 2.0).round() as i32;
        let y = (top + i as f32 * line_h).round() as i32;
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                if (dx, dy) != (0, 0) && dx * dx + dy * dy <= reach * reach {
                    draw_text_mut(&mut out, outline, x + dx, y + dy, scale, &font, line);
                }
            }
        }
        draw_text_mut(&mut out, image::Rgb(color.0), x, y, scale, &font, line);
    }
    out
}

/// Line height over font size.
const LINE_SPACING: f32 = 1.2;

/// Greedy wrapping at spaces: as many words a line as fit `room` by `width`. A word wider than
/// `room` gets a line of its own (the caller shrinks the text until it fits).
fn wrap(text: &str, room: f32, width: &dyn Fn(&str) -> f32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && width(&candidate) > room {
            lines.push(std::mem::replace(&mut line, word.to_owned()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
