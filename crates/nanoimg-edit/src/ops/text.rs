//! Captions: text in the bundled font (DejaVu Sans Bold, Bitstream Vera licence,
//! `fonts/LICENSE-DejaVu`), rasterised by `ab_glyph` through `imageproc`.

use crate::plan::{Place, Rgb};
use ab_glyph::{FontRef, PxScale};
use image::{GrayImage, Luma, RgbImage};
use imageproc::distance_transform::Norm;
use imageproc::drawing::{draw_text_mut, text_size};
use imageproc::morphology::dilate;

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
    // The outline's reach in pixels; a u8 because the dilation takes one (255 px is an outline
    // for text over 4,500 px tall).
    let reach = reach_of(px).min(255.0) as u8;
    let mut out = img.clone();
    for (i, line) in lines.iter().enumerate() {
        let (tw, _) = text_size(scale, &font, line);
        let x = ((w as f32 - tw as f32) / 2.0).round() as i32;
        let y = (top + i as f32 * line_h).round() as i32;
        draw_outlined(
            &mut out,
            (x, y),
            line,
            (scale, &font),
            reach,
            (outline, image::Rgb(color.0)),
        );
    }
    out
}

/// Draws `line` at `at` in `fill`, ringed by `outline` out to `reach` pixels. The glyphs are
/// drawn once into a coverage mask around the line; the ring is that mask dilated by a disk
/// (a distance transform, linear in the box's pixels), so the cost does not grow with the
/// square of the outline's width.
fn draw_outlined(
    out: &mut RgbImage,
    (x, y): (i32, i32),
    line: &str,
    (scale, font): (PxScale, &FontRef),
    reach: u8,
    (outline, fill): (image::Rgb<u8>, image::Rgb<u8>),
) {
    let (tw, _) = text_size(scale, font, line);
    let pad = i32::from(reach) + 2;
    // Glyphs reach below the nominal line (descenders) and a little past its advance.
    let (bw, bh) = (
        tw as i32 + 2 * pad + (scale.x * 0.3).ceil() as i32,
        (scale.y * 1.4).ceil() as i32 + 2 * pad,
    );
    let mut cover = GrayImage::new(bw.max(1) as u32, bh.max(1) as u32);
    draw_text_mut(&mut cover, Luma([255]), pad, pad, scale, font, line);
    let ring = dilate(&cover, Norm::L2, reach);
    let (w, h) = (out.width() as i32, out.height() as i32);
    for (bx, by, c) in cover.enumerate_pixels() {
        let (ox, oy) = (x - pad + bx as i32, y - pad + by as i32);
        if ox < 0 || oy < 0 || ox >= w || oy >= h {
            continue;
        }
        let p = out.get_pixel_mut(ox as u32, oy as u32);
        if ring.get_pixel(bx, by)[0] > 0 {
            *p = outline;
        }
        let a = u32::from(c[0]);
        if a > 0 {
            for (o, f) in p.0.iter_mut().zip(fill.0) {
                *o = ((u32::from(f) * a + u32::from(*o) * (255 - a) + 127) / 255) as u8;
            }
        }
    }
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
