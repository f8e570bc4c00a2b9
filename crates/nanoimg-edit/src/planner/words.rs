//! Reading the language of edits: how strong, how many, which part, which colour, and what is
//! outside an edit altogether.

use crate::plan::{Area, Rgb};

/// How strong a change is, from the words around it.
pub(super) fn intensity(c: &str) -> f32 {
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
pub(super) fn contains_word(c: &str, w: &str) -> bool {
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

pub(super) fn any_word(c: &str, ws: &[&str]) -> bool {
    ws.iter().any(|w| contains_word(c, w))
}

/// Numbers in the clause, in order ("20", "1.5", "-10").
pub(super) fn numbers(c: &str) -> Vec<f32> {
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
pub(super) fn percent(c: &str) -> Option<f32> {
    let i = c.find('%').or_else(|| c.find(" percent"))?;
    numbers(&c[..i]).last().map(|v| v / 100.0)
}

/// "16:9", "16x9", "16 by 9", "4/3"; "square" is 1:1.
pub(super) fn ratio(c: &str) -> Option<(u32, u32)> {
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
pub(super) fn pixel_size(c: &str) -> Option<(u32, u32)> {
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
pub(super) fn named_area(c: &str) -> Option<(Area, &'static str)> {
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
pub(super) fn outside_the_image(c: &str) -> Option<&'static str> {
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

/// Words that carry no content for a prompt.
pub(super) const FILLER: &[&str] = &[
    "please", "can", "could", "you", "would", "it", "the", "image", "picture", "photo", "make", "turn",
    "change", "into", "to", "a", "an", "look", "looks", "like", "this", "that", "i", "want", "me", "my",
    "just", "now", "so", "of",
];

/// What is left of a clause for a prompt ("turn the sky into a sunset" → "sunset sky").
pub(super) fn prompt_from(c: &str) -> String {
    let words: Vec<&str> = c
        .split(|ch: char| !ch.is_alphanumeric() && ch != '-' && ch != '\'')
        .filter(|w| !w.is_empty() && !FILLER.contains(w))
        .collect();
    words.join(" ")
}

pub(super) fn colour(c: &str) -> Option<Rgb> {
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
