//! The built-in planner: a plain-language instruction → an [`EditPlan`], with no network and no
//! model. The instruction is data: it is split into clauses, and each clause is matched against
//! the language of edits (numbers, percentages, "a bit", "twice", directions, aspect ratios,
//! colour words). What pixel operations cannot express becomes a generative operation with a
//! prompt taken from the clause. A clause that asks for anything but a change to this image
//! (deleting, sending, granting, running queries) is refused with the reason; nothing in a plan
//! can do such things anyway.

use crate::plan::{Anchor, Area, Axis, EditPlan, Op, Place, Rgb, CAPTION_SIZE};
use crate::EditError;

/// What an instruction asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Edits to run on the current image.
    Edit(EditPlan),
    /// Go back one version (the session does it; no plan runs).
    Undo,
    /// Go forward again after an undo.
    Redo,
}

/// How strong a change is, from the words around it.
fn intensity(c: &str) -> f32 {
    let has = |ws: &[&str]| ws.iter().any(|w| contains_word(c, w));
    if has(&["slightly", "subtly", "touch", "tad", "little", "bit", "somewhat"]) {
        0.1
    } else if has(&[
        "much",
        "lot",
        "very",
        "really",
        "way",
        "strongly",
        "heavily",
        "significantly",
    ]) {
        0.4
    } else {
        0.2
    }
}

/// `c` contains `w` as whole words (w may be several words).
fn contains_word(c: &str, w: &str) -> bool {
    let mut from = 0;
    while let Some(i) = c[from..].find(w) {
        let (s, e) = (from + i, from + i + w.len());
        let before = c[..s].chars().next_back().is_none_or(|ch| !ch.is_alphanumeric());
        let after = c[e..].chars().next().is_none_or(|ch| !ch.is_alphanumeric());
        if before && after {
            return true;
        }
        from = e;
    }
    false
}

fn any_word(c: &str, ws: &[&str]) -> bool {
    ws.iter().any(|w| contains_word(c, w))
}

/// Numbers in the clause, in order ("20", "1.5", "-10").
fn numbers(c: &str) -> Vec<f32> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = c.chars().chain(std::iter::once(' ')).collect();
    for (i, &ch) in chars.iter().enumerate() {
        // An exponent ("1e309") belongs to its number: read as 1 it would be a quiet misreading.
        let exponent = ch == 'e'
            && cur.bytes().any(|b| b.is_ascii_digit())
            && !cur.contains('e')
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == '-' || *n == '+');
        let sign_after_e = (ch == '-' || ch == '+') && cur.ends_with('e');
        if ch.is_ascii_digit()
            || (ch == '.' && !cur.is_empty())
            || (ch == '-' && cur.is_empty())
            || exponent
            || sign_after_e
        {
            cur.push(ch);
        } else {
            if let Ok(v) = cur.trim_end_matches('.').parse::<f32>() {
                out.push(v);
            }
            cur.clear();
        }
    }
    out
}

/// A percentage in the clause as a fraction (20% → 0.2).
fn percent(c: &str) -> Option<f32> {
    let i = c.find('%').or_else(|| c.find(" percent"))?;
    numbers(&c[..i]).last().map(|v| v / 100.0)
}

/// "16:9", "16x9", "16 by 9", "4/3"; "square" is 1:1.
fn ratio(c: &str) -> Option<(u32, u32)> {
    if contains_word(c, "square") {
        return Some((1, 1));
    }
    for sep in [":", "x", " by ", "/", " to "] {
        for (i, _) in c.match_indices(sep) {
            let l = c[..i].trim_end();
            let r = c[i + sep.len()..].trim_start();
            let a: String = l.chars().rev().take_while(|ch| ch.is_ascii_digit()).collect();
            let b: String = r.chars().take_while(|ch| ch.is_ascii_digit()).collect();
            let a: String = a.chars().rev().collect();
            if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                if (1..=100).contains(&a) && (1..=100).contains(&b) {
                    return Some((a, b));
                }
            }
        }
    }
    if contains_word(c, "widescreen") {
        return Some((16, 9));
    }
    if contains_word(c, "portrait") {
        return Some((4, 5));
    }
    if contains_word(c, "landscape") {
        return Some((3, 2));
    }
    None
}

/// "800x600" as a pixel size (both at least 8, so ratios like 16:9 are not taken for sizes).
fn pixel_size(c: &str) -> Option<(u32, u32)> {
    let n = numbers(c);
    match (ratio(c), n.as_slice()) {
        (Some((a, b)), _) if a >= 8 && b >= 8 && (c.contains('x') || c.contains(" by ")) => Some((a, b)),
        _ => {
            // Ratios are capped at 100; a size may be larger.
            let digits: Vec<u32> = n
                .iter()
                .filter(|v| **v >= 8.0 && v.fract() == 0.0)
                .map(|v| *v as u32)
                .collect();
            (digits.len() >= 2 && (c.contains('x') || c.contains(" by "))).then(|| (digits[0], digits[1]))
        }
    }
}

/// Named parts of the picture, as areas.
fn named_area(c: &str) -> Option<(Area, &'static str)> {
    let a = |x, y, w, h| Area {
        x,
        y,
        width: w,
        height: h,
    };
    let table: &[(&[&str], Area, &str)] = &[
        (&["left half"], a(0.0, 0.0, 0.5, 1.0), "left half"),
        (&["right half"], a(0.5, 0.0, 0.5, 1.0), "right half"),
        (&["top half", "upper half"], a(0.0, 0.0, 1.0, 0.5), "top half"),
        (
            &["bottom half", "lower half"],
            a(0.0, 0.5, 1.0, 0.5),
            "bottom half",
        ),
        (&["top left"], a(0.0, 0.0, 0.5, 0.5), "top left quarter"),
        (&["top right"], a(0.5, 0.0, 0.5, 0.5), "top right quarter"),
        (&["bottom left"], a(0.0, 0.5, 0.5, 0.5), "bottom left quarter"),
        (&["bottom right"], a(0.5, 0.5, 0.5, 0.5), "bottom right quarter"),
        (&["sky", "clouds", "top"], a(0.0, 0.0, 1.0, 0.4), "the top (sky)"),
        (
            &["ground", "floor", "foreground", "grass", "bottom"],
            a(0.0, 0.6, 1.0, 0.4),
            "the bottom",
        ),
        (&["background"], a(0.0, 0.0, 1.0, 1.0), "the whole picture"),
        (
            &["center", "centre", "middle", "face", "subject"],
            a(0.25, 0.25, 0.5, 0.5),
            "the centre",
        ),
        (&["left"], a(0.0, 0.0, 0.5, 1.0), "left half"),
        (&["right"], a(0.5, 0.0, 0.5, 1.0), "right half"),
    ];
    table
        .iter()
        .find(|(words, _, _)| words.iter().any(|w| contains_word(c, w)))
        .map(|(_, area, name)| (*area, *name))
}

/// Words that mean the clause wants something outside the image: refused, with the reason.
fn outside_the_image(c: &str) -> Option<&'static str> {
    // The service's own controls: never something an edit can change.
    let controls = [
        "api key",
        "master key",
        "admin scope",
        "admin rights",
        "developer mode",
        "jailbreak",
        "system prompt",
        "system:",
        "safety filter",
        "content filter",
        "safety system",
        "moderation",
        "rate limit",
        "audit log",
    ];
    if controls.iter().any(|k| c.contains(k)) {
        return Some("it asks to change the service (keys, accounts, safety settings), not this image");
    }
    if ["watermark", "content credentials", "c2pa", "provenance"]
        .iter()
        .any(|k| c.contains(k))
    {
        return Some("NanoImg does not remove or change watermarks or Content Credentials");
    }
    let ids = ["img_", "job_", "ses_", "ver_", "key_", "ten_", "nimg_"];
    if ids.iter().any(|p| c.contains(p)) {
        return Some("it names another object; an edit only changes this image");
    }
    if c.split_whitespace().any(|w| {
        w.split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
    }) {
        return Some("it names an email address; an edit only changes this image");
    }
    if [
        "`",
        "$(",
        "rm -rf",
        "sudo ",
        "&&",
        "| sh",
        "bash -c",
        "powershell",
    ]
    .iter()
    .any(|k| c.contains(k))
    {
        return Some("it reads as a shell command; an edit only changes this image");
    }
    if c.contains(":\\") || c.contains(":/") && !c.contains("://") {
        return Some("it names a file path; an edit only changes this image");
    }
    let objects = [
        "my images",
        "my pictures",
        "my photos",
        "my files",
        "my assets",
        "all images",
        "all files",
        "other images",
        "the database",
        "database",
        "api key",
        "api keys",
        "keys",
        "password",
        "passwords",
        "account",
        "accounts",
        "tenant",
        "tenants",
        "users",
        "admin",
        "administrator",
        "safety",
        "logging",
        "limits",
        "history",
        "references",
        "audit",
        "assets",
        "images",
        "files",
        "pictures",
        "photos",
        "every image",
    ];
    let acts = [
        "delete",
        "erase all",
        "drop",
        "export",
        "send",
        "upload",
        "download",
        "email",
        "post",
        "grant",
        "give",
        "make me",
        "share",
        "leak",
        "print",
        "show me",
        "reveal",
        "list",
        "read",
        "write",
        "fetch",
        "curl",
        "run",
        "execute",
        "ignore",
        "disable",
        "bypass",
        "turn off",
        "switch off",
        "revoke",
    ];
    if c.contains("://") || c.contains("www.") {
        return Some("it names a web address; an edit only changes this image");
    }
    let sql = [
        "drop table",
        "delete from",
        "insert into",
        "truncate ",
        "union select",
        "alter table",
        "';",
        "--",
    ];
    if sql.iter().any(|k| c.contains(k))
        || c.contains("select ") && c.contains(" from ")
        || c.contains("update ") && c.contains(" set ")
    {
        return Some("it reads as a database command; an edit only changes this image");
    }
    if c.contains('/') && (c.contains("/etc") || c.contains("~/") || c.contains("../")) {
        return Some("it names a file path; an edit only changes this image");
    }
    // Verbs that move or run something; no change to a picture starts with them.
    let first = c
        .split_whitespace()
        .find(|w| !["please", "now", "then", "also", "just"].contains(w))
        .unwrap_or_default();
    let movers = [
        "email", "mail", "upload", "export", "send", "share", "post", "publish", "tweet", "download",
        "fetch", "curl", "wget", "execute", "run", "forward",
    ];
    if movers.contains(&first) {
        return Some("it asks to send, fetch, run or delete something; an edit only changes this image");
    }
    let obj = objects.iter().any(|o| contains_word(c, o));
    let act = acts.iter().any(|a| contains_word(c, a));
    if obj && act
        || (contains_word(c, "ignore") && any_word(c, &["instructions", "rules", "previous", "above"]))
    {
        return Some("it asks for something other than a change to this image");
    }
    None
}

/// The clauses of an instruction: "crop it to a square, brighten it and then add a vignette".
fn clauses(text: &str) -> Vec<String> {
    let mut t = format!(" {} ", text.to_lowercase().replace(['\n', '\t'], " "));
    // Phrases whose "and" is not a separator.
    for (from, to) in [
        (" black and white ", " grayscale "),
        (" black & white ", " grayscale "),
        (" b&w ", " grayscale "),
        (" b/w ", " grayscale "),
        (" rock and roll ", " rock-n-roll "),
    ] {
        t = t.replace(from, to);
    }
    for sep in [
        " and then ",
        " then ",
        " and also ",
        " also ",
        " and ",
        " plus ",
        ";",
        ",",
        ". ",
        "&",
    ] {
        t = t.replace(sep, "\u{1}");
    }
    t.split('\u{1}')
        .map(|s| s.trim().trim_end_matches(['.', '!', '?']).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Words that carry no content for a prompt.
const FILLER: &[&str] = &[
    "please", "can", "could", "you", "would", "it", "the", "image", "picture", "photo", "make", "turn",
    "change", "into", "to", "a", "an", "look", "looks", "like", "this", "that", "i", "want", "me", "my",
    "just", "now", "so", "of",
];

/// What is left of a clause for a prompt ("turn the sky into a sunset" → "sunset sky").
fn prompt_from(c: &str) -> String {
    let words: Vec<&str> = c
        .split(|ch: char| !ch.is_alphanumeric() && ch != '-' && ch != '\'')
        .filter(|w| !w.is_empty() && !FILLER.contains(w))
        .collect();
    words.join(" ")
}

/// One clause → operations, or the reason it cannot be done.
fn clause_ops(c: &str, (w, h): (u32, u32)) -> Result<Vec<Op>, String> {
    if let Some(why) = outside_the_image(c) {
        return Err(format!("\"{c}\" was not done: {why}"));
    }
    let has = |ws: &[&str]| any_word(c, ws);
    let k = intensity(c);
    let amount = percent(c).map(|p| p.clamp(0.0, 1.0)).unwrap_or(k);
    let neg = |v: f32| -v;

    // Geometry.
    if has(&["crop", "cut", "trim"]) || (has(&["make", "turn"]) && has(&["square"]) && !has(&["extend"])) {
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
            return Ok(vec![Op::CropAspect {
                width: a,
                height: b,
                anchor,
            }]);
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
            return Ok(vec![Op::Crop { area }]);
        }
        if let Some((area, _)) = named_area(c) {
            return Ok(vec![Op::Crop { area }]);
        }
        return Err(format!("\"{c}\": crop to what? Say a ratio (\"to a square\", \"16:9\"), a part (\"the left half\") or a percentage"));
    }
    if has(&["extend", "outpaint", "expand", "widen", "wider", "taller"]) {
        // What to fill with, if the clause says more than where and how much.
        let geometry = [
            "extend", "outpaint", "expand", "widen", "wider", "taller", "side", "sides", "left", "right",
            "top", "bottom", "up", "down", "by", "pixels", "px", "canvas", "with", "and", "on",
        ];
        let words = prompt_from(c);
        let said: Vec<&str> = words
            .split(' ')
            .filter(|w| {
                !w.is_empty() && !geometry.contains(w) && w.parse::<f32>().is_err() && !w.contains(':')
            })
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
        return Ok(vec![Op::Outpaint {
            left: l,
            top: t,
            right: r,
            bottom: b,
            prompt,
        }]);
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
        return Ok(vec![Op::Upscale { factor: f as u32 }]);
    }
    let size_words =
        has(&["twice", "double", "half", "triple"]) && has(&["big", "large", "size", "small", "wide"]);
    if size_words
        || has(&[
            "resize", "scale", "shrink", "enlarge", "bigger", "smaller", "downsize", "size",
        ])
    {
        if let Some((nw, nh)) = pixel_size(c) {
            return Ok(vec![Op::Resize {
                width: nw,
                height: nh,
            }]);
        }
        if let Some(p) = percent(c) {
            let f = if has(&["down", "by"]) && has(&["down", "shrink", "smaller", "reduce"]) {
                1.0 - p
            } else if has(&["up", "enlarge", "bigger"]) && has(&["by"]) {
                1.0 + p
            } else {
                p
            };
            return Ok(vec![Op::Scale { factor: f }]);
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
            return Ok(vec![Op::Scale { factor: x }]);
        }
        if let Some(px) = numbers(c).into_iter().find(|v| *v >= 16.0) {
            // "resize to 1024 wide" / "800 pixels tall".
            let f = if has(&["tall", "high", "height"]) {
                px / h as f32
            } else {
                px / w as f32
            };
            return Ok(vec![Op::Scale { factor: f }]);
        }
        return Ok(vec![Op::Scale { factor: f }]);
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
        return Ok(vec![Op::Rotate { degrees: deg, fill }]);
    }
    if has(&["flip", "mirror"]) {
        let axis = if has(&["vertically", "vertical", "upside", "top to bottom"]) {
            Axis::Vertical
        } else {
            Axis::Horizontal
        };
        return Ok(vec![Op::Flip { axis }]);
    }
    if has(&["border", "frame", "pad", "padding", "margin"]) && !has(&["remove"]) {
        let px = numbers(c)
            .into_iter()
            .find(|v| *v >= 1.0)
            .map(|v| v as u32)
            .unwrap_or((w.min(h) / 20).max(1));
        let fill = colour(c).unwrap_or(Rgb([255, 255, 255]));
        return Ok(vec![Op::Pad {
            left: px,
            top: px,
            right: px,
            bottom: px,
            fill,
        }]);
    }

    // Tone and colour.
    if has(&[
        "grayscale",
        "greyscale",
        "monochrome",
        "gray",
        "grey",
        "desaturated completely",
    ]) && !has(&["sky", "hair"])
    {
        return Ok(vec![Op::Grayscale {}]);
    }
    if has(&["sepia", "vintage", "old photo", "old-timey", "antique"]) {
        return Ok(vec![Op::Sepia {}]);
    }
    if has(&["invert", "inverted", "negative"]) {
        return Ok(vec![Op::Invert {}]);
    }
    if has(&["vignette"]) || (has(&["darken", "darker"]) && has(&["corners", "edges"])) {
        return Ok(vec![Op::Vignette {
            strength: (k * 2.0).min(1.0),
        }]);
    }
    if has(&["brighten", "brighter", "lighten", "lighter", "brightness"])
        && !has(&["less", "reduce", "decrease", "lower"])
    {
        return Ok(vec![Op::Brightness { amount }]);
    }
    if has(&["darken", "darker", "dim", "dimmer"]) || has(&["brightness"]) {
        return Ok(vec![Op::Brightness { amount: neg(amount) }]);
    }
    if has(&["contrast", "punchier", "punchy", "flatter", "flat"]) {
        let less = has(&["less", "lower", "reduce", "decrease", "flatter", "flat", "softer"]);
        return Ok(vec![Op::Contrast {
            amount: if less { neg(amount) } else { amount },
        }]);
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
        return Ok(vec![Op::Saturation {
            amount: if less { neg(amount) } else { amount },
        }]);
    }
    if has(&["warmer", "warm", "warmth", "cooler", "cool", "colder", "cold"]) && !has(&["sky", "sunset"]) {
        let cool = has(&["cooler", "cool", "colder", "cold"]);
        return Ok(vec![Op::Temperature {
            amount: if cool { neg(amount) } else { amount },
        }]);
    }
    if has(&["hue"]) {
        let d = numbers(c).into_iter().next().unwrap_or(30.0).clamp(-180.0, 180.0);
        return Ok(vec![Op::Hue { degrees: d }]);
    }
    if has(&["exposure", "overexpose", "underexpose", "stop", "stops"]) {
        let stops = numbers(c)
            .into_iter()
            .next()
            .unwrap_or(if k > 0.3 { 1.0 } else { 0.5 });
        let down = has(&["decrease", "reduce", "lower", "less", "underexpose", "down"]);
        return Ok(vec![Op::Exposure {
            stops: if down { -stops.abs() } else { stops.abs() },
        }]);
    }
    if has(&["gamma"]) {
        let g = numbers(c).into_iter().next().unwrap_or(1.2);
        return Ok(vec![Op::Gamma { gamma: g }]);
    }

    // Filters.
    if has(&["blur", "blurry", "soften", "soft", "defocus"]) && !has(&["background"]) {
        let sigma = numbers(c).into_iter().find(|v| *v > 0.0).unwrap_or(match k {
            k if k < 0.15 => 1.5,
            k if k > 0.3 => 8.0,
            _ => 3.0,
        });
        return Ok(vec![Op::Blur { sigma }]);
    }
    if has(&["sharpen", "sharper", "crisper", "crisp", "sharpness"]) {
        return Ok(vec![Op::Sharpen { amount: k * 4.0 }]);
    }

    // Generative.
    if has(&[
        "variation",
        "variations",
        "another version",
        "different version",
        "alternative",
    ]) {
        return Ok(vec![Op::Variation { strength: 0.5 }]);
    }
    let prompt = prompt_from(c);
    if prompt.is_empty() {
        return Err(format!("\"{c}\" does not say what to change"));
    }
    let replace = has(&[
        "replace", "swap", "remove", "erase", "delete", "add", "put", "place", "change", "turn", "make",
        "fill",
    ]);
    if let Some((area, _)) = named_area(c).filter(|_| replace) {
        return Ok(vec![Op::Inpaint { area, prompt }]);
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
    Ok(vec![Op::Restyle { prompt, strength }])
}

fn colour(c: &str) -> Option<Rgb> {
    let table = [
        ("white", [255, 255, 255]),
        ("black", [0, 0, 0]),
        ("red", [220, 30, 30]),
        ("green", [30, 160, 60]),
        ("blue", [30, 80, 220]),
        ("yellow", [240, 210, 40]),
        ("gray", [128, 128, 128]),
        ("grey", [128, 128, 128]),
    ];
    table
        .iter()
        .find(|(n, _)| contains_word(c, n))
        .map(|(_, v)| Rgb(*v))
}

/// Words that say a clause is about text on the picture.
const CAPTION_WORDS: &[&str] = &[
    "caption", "text", "write", "writing", "says", "saying", "say", "label", "title", "words", "headline",
];

/// Takes the quoted passages out of an instruction that talks about text ("add a caption saying
/// \"Happy birthday, Ada!\""), leaving `⟦n⟧` in their place: their case and punctuation are
/// kept, and nothing inside them is read as part of the instruction. Double quotes (straight or
/// curly) and single quotes at word edges count; an apostrophe does not.
fn take_quotes(text: &str) -> (String, Vec<String>) {
    let lower = text.to_lowercase();
    if !CAPTION_WORDS.iter().any(|w| contains_word(&lower, w)) {
        return (text.to_owned(), Vec::new());
    }
    let chars: Vec<char> = text.chars().collect();
    let closer = |c: char| match c {
        '"' => Some('"'),
        '\u{201c}' => Some('\u{201d}'),
        '\'' | '\u{2018}' => Some(if c == '\'' { '\'' } else { '\u{2019}' }),
        _ => None,
    };
    let (mut out, mut quoted) = (String::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at_edge = i == 0 || !chars[i - 1].is_alphanumeric();
        if let Some(close) = closer(c).filter(|_| at_edge) {
            let end = (i + 1..chars.len())
                .find(|&j| chars[j] == close && chars.get(j + 1).is_none_or(|n| !n.is_alphanumeric()));
            if let Some(end) = end {
                let inner: String = chars[i + 1..end].iter().collect();
                if !inner.trim().is_empty() {
                    out.push_str(&format!(" \u{27e6}{}\u{27e7} ", quoted.len()));
                    quoted.push(inner.trim().to_owned());
                    i = end + 1;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    (out, quoted)
}

/// The index of the quoted passage a clause holds, if it holds one.
fn placeholder(c: &str) -> Option<usize> {
    let start = c.find('\u{27e6}')? + '\u{27e6}'.len_utf8();
    let end = start + c[start..].find('\u{27e7}')?;
    c[start..end].parse().ok()
}

/// A clause with its quoted passages put back (lower-cased like the rest of the clause).
fn restore(c: &str, quoted: &[String]) -> String {
    let mut c = c.to_owned();
    for (i, q) in quoted.iter().enumerate() {
        c = c.replace(&format!("\u{27e6}{i}\u{27e7}"), &q.to_lowercase());
    }
    c
}

/// "add a caption saying ⟦0⟧ at the top in red" → a caption.
fn caption_op(c: &str, quoted: &[String]) -> Option<Op> {
    let text = quoted.get(placeholder(c)?)?.clone();
    if !any_word(c, CAPTION_WORDS) {
        return None;
    }
    let place = if any_word(c, &["top", "above", "header"]) {
        Place::Top
    } else if any_word(c, &["middle", "center", "centre", "across"]) {
        Place::Center
    } else {
        Place::Bottom
    };
    let size = if any_word(c, &["big", "large", "huge", "bold", "giant"]) {
        0.12
    } else if any_word(c, &["small", "tiny", "little", "subtle"]) {
        0.05
    } else {
        CAPTION_SIZE
    };
    Some(Op::Caption {
        text,
        place,
        size,
        color: colour(c).unwrap_or(Rgb([255, 255, 255])),
    })
}

/// Plans an instruction for an image of `size`. Refused clauses make the whole instruction
/// refused (a half-done instruction would surprise more than a clear "no").
pub fn plan(instruction: &str, size: (u32, u32)) -> Result<Planned, EditError> {
    let text = instruction.trim();
    if text.is_empty() {
        return Err(EditError::InvalidPlan("the instruction is empty".into()));
    }
    if text.len() > 2000 {
        return Err(EditError::InvalidPlan(format!(
            "the instruction is {} bytes; the limit is 2000",
            text.len()
        )));
    }
    let (text, quoted) = take_quotes(text);
    let parts = clauses(&text);
    match parts.as_slice() {
        [one]
            if matches!(
                one.as_str(),
                "undo"
                    | "undo that"
                    | "go back"
                    | "revert"
                    | "revert that"
                    | "undo the last edit"
                    | "undo last edit"
            ) =>
        {
            return Ok(Planned::Undo)
        }
        [one] if matches!(one.as_str(), "redo" | "redo that") => return Ok(Planned::Redo),
        _ => {}
    }
    let mut ops = Vec::new();
    let mut size_now = size;
    let limits = crate::PlanLimits::default();
    for c in &parts {
        // "…, keep the left": where the previous aspect crop keeps the picture.
        if let (Some(rest), Some(Op::CropAspect { anchor, .. })) = (c.strip_prefix("keep "), ops.last_mut()) {
            let a = [
                ("left", Anchor::Left),
                ("right", Anchor::Right),
                ("top", Anchor::Top),
                ("bottom", Anchor::Bottom),
            ]
            .into_iter()
            .find(|(w, _)| contains_word(rest, w));
            if let Some((_, a)) = a {
                *anchor = a;
                continue;
            }
        }
        let more = match caption_op(c, &quoted) {
            Some(op) => {
                if let Some(why) = outside_the_image(c) {
                    return Err(EditError::InvalidPlan(format!("\"{c}\" was not done: {why}")));
                }
                vec![op]
            }
            None => clause_ops(&restore(c, &quoted), size_now).map_err(EditError::InvalidPlan)?,
        };
        for op in &more {
            size_now = op
                .check(size_now, &limits)
                .map_err(|m| EditError::InvalidPlan(format!("\"{c}\": {m}")))?;
        }
        ops.extend(more);
    }
    Ok(Planned::Edit(EditPlan::new(ops)))
}

/// What asks for the last instruction again.
const REPEAT: &[&str] = &[
    "again",
    "do that again",
    "do it again",
    "repeat",
    "repeat that",
    "once more",
    "one more time",
    "same again",
    "more",
    "a bit more",
    "even more",
];

/// Plans `instruction` in an edit session whose earlier instructions, from the first to the one
/// that made the current image, are `history`. "again", "once more", "a bit more" and the like
/// repeat the last instruction on the current image; everything else is [`plan`].
pub fn plan_in_context(
    instruction: &str,
    size: (u32, u32),
    history: &[String],
) -> Result<Planned, EditError> {
    let said = instruction
        .trim()
        .trim_end_matches(['.', '!', '?'])
        .trim()
        .to_lowercase();
    let said = said.strip_prefix("please ").unwrap_or(&said);
    if !REPEAT.contains(&said) {
        return plan(instruction, size);
    }
    // The last instruction that planned an edit (not an undo, redo or a repeat itself).
    let last = history.iter().rev().find(|h| {
        let h = h.trim().trim_end_matches(['.', '!', '?']).to_lowercase();
        !REPEAT.contains(&h.as_str()) && matches!(plan(&h, size), Ok(Planned::Edit(_)))
    });
    match last {
        Some(h) => plan(h, size),
        None => Err(EditError::InvalidPlan(format!(
            "\"{}\" repeats the last edit, and there is none yet",
            instruction.trim()
        ))),
    }
}
