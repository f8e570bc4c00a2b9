//! One clause → one operation, by the words it uses: geometry first, then tone and colour, then
//! filters; what none of those expresses becomes a generative operation with the clause as its
//! prompt.

use super::words::{
    any_word, colour, intensity, named_area, numbers, outside_the_image, percent, pixel_size, prompt_from,
    ratio,
};
use crate::plan::{Anchor, Area, Axis, Op, Rgb};

/// Why a clause became no operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ClauseError {
    /// It asks for something other than a change to this image.
    #[error("\"{clause}\" was not done: {why}")]
    OutsideImage { clause: String, why: &'static str },
    /// It asks for a crop without saying to what.
    #[error("\"{clause}\": crop to what? Say a ratio (\"to a square\", \"16:9\"), a part (\"the left half\") or a percentage")]
    CropToWhat { clause: String },
    /// Nothing is left of it to change.
    #[error("\"{clause}\" does not say what to change")]
    NoChange { clause: String },
}

/// One clause → its operation, or the reason it cannot be done.
pub(super) fn clause_op(c: &str, size: (u32, u32)) -> Result<Op, ClauseError> {
    if let Some(why) = outside_the_image(c) {
        return Err(ClauseError::OutsideImage {
            clause: c.to_owned(),
            why,
        });
    }
    if let Some(op) = geometry(c, size)? {
        return Ok(op);
    }
    match tone(c).or_else(|| filter(c)) {
        Some(op) => Ok(op),
        None => generative(c),
    }
}

/// Crops, canvas growth, scaling, rotation, mirroring and borders.
fn geometry(c: &str, (w, h): (u32, u32)) -> Result<Option<Op>, ClauseError> {
    let has = |ws: &[&str]| any_word(c, ws);
    if has(&["crop", "cut", "trim"]) || (has(&["make", "turn"]) && has(&["square"]) && !has(&["extend"])) {
        return crop(c).map(Some);
    }
    if has(&["extend", "outpaint", "expand", "widen", "wider", "taller"]) {
        return Ok(Some(outpaint(c, (w, h))));
    }
    if has(&[
        "upscale",
        "upres",
        "super-resolution",
        "enhance resolution",
        "higher resolution",
    ]) {
        let f = numbers(c)
            .into_iter()
            .find(|v| (2.0..=4.0).contains(v))
            .unwrap_or(2.0);
        return Ok(Some(Op::Upscale { factor: f as u32 }));
    }
    let size_words =
        has(&["twice", "double", "half", "triple"]) && has(&["big", "large", "size", "small", "wide"]);
    if size_words
        || has(&[
            "resize", "scale", "shrink", "enlarge", "bigger", "smaller", "downsize", "size",
        ])
    {
        return Ok(Some(resize(c, (w, h))));
    }
    if has(&["rotate", "turn", "tilt", "spin"])
        && (has(&[
            "degrees",
            "degree",
            "left",
            "right",
            "clockwise",
            "counterclockwise",
            "anticlockwise",
            "counter-clockwise",
            "anti-clockwise",
            "upside",
            "sideways",
            "around",
        ]) || !numbers(c).is_empty())
    {
        return Ok(Some(rotate(c)));
    }
    if has(&["flip", "mirror"]) {
        let axis = if has(&["vertically", "vertical", "upside", "top to bottom"]) {
            Axis::Vertical
        } else {
            Axis::Horizontal
        };
        return Ok(Some(Op::Flip { axis }));
    }
    if has(&["border", "frame", "pad", "padding", "margin"]) && !has(&["remove"]) {
        let px = numbers(c)
            .into_iter()
            .find(|v| *v >= 1.0)
            .map(|v| v as u32)
            .unwrap_or((w.min(h) / 20).max(1));
        let fill = colour(c).unwrap_or(Rgb([255, 255, 255]));
        return Ok(Some(Op::Pad {
            left: px,
            top: px,
            right: px,
            bottom: px,
            fill,
        }));
    }
    Ok(None)
}

/// "crop it to 16:9", "crop 10% off the left", "crop to the top half".
fn crop(c: &str) -> Result<Op, ClauseError> {
    let has = |ws: &[&str]| any_word(c, ws);
    if let Some((a, b)) = ratio(c).filter(|_| !c.contains("px") && !has(&["pixels"])) {
        let anchor = if has(&["top"]) {
            Anchor::Top
        } else if has(&["bottom"]) {
            Anchor::Bottom
        } else if has(&["left"]) {
            Anchor::Left
        } else if has(&["right"]) {
            Anchor::Right
        } else {
            Anchor::Center
        };
        return Ok(Op::CropAspect {
            width: a,
            height: b,
            anchor,
        });
    }
    if let Some(p) = percent(c) {
        // "crop 10% off each side" / "off the edges" / "from the left".
        let p = p.clamp(0.0, 0.45);
        let area = if has(&["left"]) {
            Area {
                x: p,
                y: 0.0,
                width: 1.0 - p,
                height: 1.0,
            }
        } else if has(&["right"]) {
            Area {
                x: 0.0,
                y: 0.0,
                width: 1.0 - p,
                height: 1.0,
            }
        } else if has(&["top"]) {
            Area {
                x: 0.0,
                y: p,
                width: 1.0,
                height: 1.0 - p,
            }
        } else if has(&["bottom"]) {
            Area {
                x: 0.0,
                y: 0.0,
                width: 1.0,
                height: 1.0 - p,
            }
        } else {
            Area {
                x: p,
                y: p,
                width: 1.0 - 2.0 * p,
                height: 1.0 - 2.0 * p,
            }
        };
        return Ok(Op::Crop { area });
    }
    if let Some((area, _)) = named_area(c) {
        return Ok(Op::Crop { area });
    }
    Err(ClauseError::CropToWhat { clause: c.to_owned() })
}

/// "extend the canvas 200 px to the left with a beach": the sides to grow and what to fill with.
fn outpaint(c: &str, (w, h): (u32, u32)) -> Op {
    let has = |ws: &[&str]| any_word(c, ws);
    // What to fill with, if the clause says more than where and how much.
    let geometry = [
        "extend", "outpaint", "expand", "widen", "wider", "taller", "side", "sides", "left", "right", "top",
        "bottom", "up", "down", "by", "pixels", "px", "canvas", "with", "and", "on",
    ];
    let words = prompt_from(c);
    let said: Vec<&str> = words
        .split(' ')
        .filter(|w| !w.is_empty() && !geometry.contains(w) && w.parse::<f32>().is_err() && !w.contains(':'))
        .collect();
    let prompt = if said.is_empty() {
        "continue the scene seamlessly".to_string()
    } else {
        said.join(" ")
    };
    let (l, t, r, b) = if let Some((a, bb)) = ratio(c) {
        // Grow the short way until the ratio holds.
        let (tw, th) = if u64::from(w) * u64::from(bb) < u64::from(h) * u64::from(a) {
            ((u64::from(h) * u64::from(a) / u64::from(bb)) as u32, h)
        } else {
            (w, (u64::from(w) * u64::from(bb) / u64::from(a)) as u32)
        };
        let (dw, dh) = (tw.saturating_sub(w), th.saturating_sub(h));
        (dw / 2, dh / 2, dw - dw / 2, dh - dh / 2)
    } else {
        let px = numbers(c).into_iter().find(|v| *v >= 1.0).map(|v| v as u32);
        let by = |frac: u32| px.unwrap_or(frac);
        let (dw, dh) = (by(w / 4), by(h / 4));
        if has(&["left"]) {
            (dw, 0, 0, 0)
        } else if has(&["right"]) {
            (0, 0, dw, 0)
        } else if has(&["up", "top", "upwards", "above"]) {
            (0, dh, 0, 0)
        } else if has(&["down", "bottom", "below"]) {
            (0, 0, 0, dh)
        } else if has(&["taller"]) {
            (0, dh / 2, 0, dh - dh / 2)
        } else {
            (dw / 2, 0, dw - dw / 2, 0)
        }
    };
    Op::Outpaint {
        left: l,
        top: t,
        right: r,
        bottom: b,
        prompt,
    }
}

/// "resize to 800x600", "make it 50% smaller", "twice as big", "scale it by 3".
fn resize(c: &str, (w, h): (u32, u32)) -> Op {
    let has = |ws: &[&str]| any_word(c, ws);
    if let Some((nw, nh)) = pixel_size(c) {
        return Op::Resize {
            width: nw,
            height: nh,
        };
    }
    if let Some(p) = percent(c) {
        let f = if has(&["down", "by"]) && has(&["down", "shrink", "smaller", "reduce"]) {
            1.0 - p
        } else if has(&["up", "enlarge", "bigger"]) && has(&["by"]) {
            1.0 + p
        } else {
            p
        };
        return Op::Scale { factor: f };
    }
    let f = if has(&["half", "halve"]) {
        0.5
    } else if has(&["double", "twice"]) {
        2.0
    } else if has(&["third"]) {
        1.0 / 3.0
    } else if has(&["quarter"]) {
        0.25
    } else if let Some(x) = numbers(c).into_iter().find(|v| *v > 0.0 && *v <= 8.0) {
        x
    } else if has(&["smaller", "shrink", "down", "downsize"]) {
        0.5
    } else {
        2.0
    };
    let pixels = has(&["px", "pixels", "pixel", "wide", "tall", "high", "width", "height"]);
    if let Some(x) = numbers(c)
        .into_iter()
        .next()
        .filter(|_| !pixels && has(&["by", "times"]))
    {
        // "scale it by 3" / "by 1000": a factor, checked like any other.
        return Op::Scale { factor: x };
    }
    if let Some(px) = numbers(c).into_iter().find(|v| *v >= 16.0) {
        // "resize to 1024 wide" / "800 pixels tall".
        let f = if has(&["tall", "high", "height"]) {
            px / h as f32
        } else {
            px / w as f32
        };
        return Op::Scale { factor: f };
    }
    Op::Scale { factor: f }
}

/// "rotate 90 degrees to the left", "turn it upside down".
fn rotate(c: &str) -> Op {
    let has = |ws: &[&str]| any_word(c, ws);
    let mut deg = numbers(c)
        .into_iter()
        .next()
        .unwrap_or(if has(&["upside", "around"]) { 180.0 } else { 90.0 });
    if has(&[
        "left",
        "counterclockwise",
        "anticlockwise",
        "counter-clockwise",
        "anti-clockwise",
    ]) {
        deg = -deg;
    }
    let fill = if has(&["black"]) {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    };
    Op::Rotate { degrees: deg, fill }
}

/// Tone and colour: grayscale, sepia, brightness, contrast, saturation, temperature, hue, exposure.
fn tone(c: &str) -> Option<Op> {
    let has = |ws: &[&str]| any_word(c, ws);
    let k = intensity(c);
    let amount = percent(c).map(|p| p.clamp(0.0, 1.0)).unwrap_or(k);
    let neg = |v: f32| -v;
    if has(&[
        "grayscale",
        "greyscale",
        "monochrome",
        "gray",
        "grey",
        "desaturated completely",
    ]) && !has(&["sky", "hair"])
    {
        return Some(Op::Grayscale {});
    }
    if has(&["sepia", "vintage", "old photo", "old-timey", "antique"]) {
        return Some(Op::Sepia {});
    }
    if has(&["invert", "inverted", "negative"]) {
        return Some(Op::Invert {});
    }
    if has(&["vignette"]) || (has(&["darken", "darker"]) && has(&["corners", "edges"])) {
        return Some(Op::Vignette {
            strength: (k * 2.0).min(1.0),
        });
    }
    if has(&["brighten", "brighter", "lighten", "lighter", "brightness"])
        && !has(&["less", "reduce", "decrease", "lower"])
    {
        return Some(Op::Brightness { amount });
    }
    if has(&["darken", "darker", "dim", "dimmer"]) || has(&["brightness"]) {
        return Some(Op::Brightness { amount: neg(amount) });
    }
    if has(&["contrast", "punchier", "punchy", "flatter", "flat"]) {
        let less = has(&["less", "lower", "reduce", "decrease", "flatter", "flat", "softer"]);
        return Some(Op::Contrast {
            amount: if less { neg(amount) } else { amount },
        });
    }
    if has(&[
        "saturation",
        "saturate",
        "saturated",
        "vivid",
        "vibrant",
        "colorful",
        "colourful",
        "desaturate",
        "muted",
        "washed",
        "pop",
    ]) {
        let less = has(&[
            "less",
            "lower",
            "reduce",
            "decrease",
            "desaturate",
            "muted",
            "washed",
        ]);
        return Some(Op::Saturation {
            amount: if less { neg(amount) } else { amount },
        });
    }
    if has(&["warmer", "warm", "warmth", "cooler", "cool", "colder", "cold"]) && !has(&["sky", "sunset"]) {
        let cool = has(&["cooler", "cool", "colder", "cold"]);
        return Some(Op::Temperature {
            amount: if cool { neg(amount) } else { amount },
        });
    }
    if has(&["hue"]) {
        let d = numbers(c).into_iter().next().unwrap_or(30.0).clamp(-180.0, 180.0);
        return Some(Op::Hue { degrees: d });
    }
    if has(&["exposure", "overexpose", "underexpose", "stop", "stops"]) {
        let stops = numbers(c)
            .into_iter()
            .next()
            .unwrap_or(if k > 0.3 { 1.0 } else { 0.5 });
        let down = has(&["decrease", "reduce", "lower", "less", "underexpose", "down"]);
        return Some(Op::Exposure {
            stops: if down { -stops.abs() } else { stops.abs() },
        });
    }
    if has(&["gamma"]) {
        let g = numbers(c).into_iter().next().unwrap_or(1.2);
        return Some(Op::Gamma { gamma: g });
    }
    None
}

/// Blur and sharpen.
fn filter(c: &str) -> Option<Op> {
    let has = |ws: &[&str]| any_word(c, ws);
    let k = intensity(c);
    if has(&["blur", "blurry", "soften", "soft", "defocus"]) && !has(&["background"]) {
        let sigma = numbers(c).into_iter().find(|v| *v > 0.0).unwrap_or(match k {
            k if k < 0.15 => 1.5,
            k if k > 0.3 => 8.0,
            _ => 3.0,
        });
        return Some(Op::Blur { sigma });
    }
    if has(&["sharpen", "sharper", "crisper", "crisp", "sharpness"]) {
        return Some(Op::Sharpen { amount: k * 4.0 });
    }
    None
}

/// What pixels cannot do: a variation, an inpaint of a named part, or a restyle of the whole.
fn generative(c: &str) -> Result<Op, ClauseError> {
    let has = |ws: &[&str]| any_word(c, ws);
    if has(&[
        "variation",
        "variations",
        "another version",
        "different version",
        "alternative",
    ]) {
        return Ok(Op::Variation { strength: 0.5 });
    }
    let prompt = prompt_from(c);
    if prompt.is_empty() {
        return Err(ClauseError::NoChange { clause: c.to_owned() });
    }
    let replace = has(&[
        "replace", "swap", "remove", "erase", "delete", "add", "put", "place", "change", "turn", "make",
        "fill",
    ]);
    if let Some((area, _)) = named_area(c).filter(|_| replace) {
        return Ok(Op::Inpaint { area, prompt });
    }
    let strength = if has(&[
        "style",
        "painting",
        "drawing",
        "sketch",
        "cartoon",
        "anime",
        "watercolor",
        "watercolour",
        "oil",
        "pixel",
    ]) {
        0.65
    } else {
        0.5
    };
    Ok(Op::Restyle { prompt, strength })
}
