//! LoRAs named in a prompt as A1111 and Forge users write them: `<lora:name>` or
//! `<lora:name:weight>`. The tags are taken out of the text; what is left is what the text
//! encoder (and moderation) sees.

use nanoimg_core::InvalidParam;

type Result<T> = std::result::Result<T, InvalidParam>;

/// A LoRA asked for by name, at a weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraUse {
    pub name: String,
    pub weight: f64,
}

impl LoraUse {
    /// `name` at `weight`, checked: a name, and a weight in [`super::STRENGTH_RANGE`].
    pub fn new(name: &str, weight: f64) -> Result<Self> {
        let name = name.trim();
        if name.is_empty() {
            return Err(InvalidParam::new("lora", "a LoRA without a name"));
        }
        if !weight.is_finite() || !super::STRENGTH_RANGE.contains(&weight) {
            return Err(InvalidParam::new(
                "lora",
                format!(
                    "{name}: the weight {weight} is outside {:?}",
                    super::STRENGTH_RANGE
                ),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            weight,
        })
    }

    /// The tag that asks for it, as A1111 writes it back into a prompt.
    pub fn tag(&self) -> String {
        format!("<lora:{}:{}>", self.name, self.weight)
    }
}

impl std::str::FromStr for LoraUse {
    type Err = InvalidParam;

    /// `name` or `name:weight` (the form `--lora` takes).
    fn from_str(s: &str) -> Result<Self> {
        match s.rsplit_once(':') {
            Some((n, w)) => match w.trim().parse::<f64>() {
                Ok(weight) => Self::new(n, weight),
                Err(_) => Self::new(s, 1.0),
            },
            None => Self::new(s, 1.0),
        }
    }
}

/// Takes the `<lora:…>` tags out of `prompt`: the text left (tags removed, the spaces and
/// commas around them tidied) and the LoRAs in the order written. A malformed tag is an error
/// naming it, not text.
pub fn extract(prompt: &str) -> Result<(String, Vec<LoraUse>)> {
    let mut text = String::with_capacity(prompt.len());
    let mut uses = Vec::new();
    let mut rest = prompt;
    while let Some(start) = find_tag(rest) {
        text.push_str(&rest[..start]);
        let tag = &rest[start..];
        let end = tag
            .find('>')
            .ok_or_else(|| InvalidParam::new("prompt", format!("an unclosed LoRA tag: {tag:?}")))?;
        let inner = &tag["<lora:".len()..end];
        let mut parts = inner.split(':');
        let name = parts.next().unwrap_or_default();
        let weight = parts.next();
        if parts.next().is_some() || name.trim().is_empty() {
            return Err(InvalidParam::new(
                "prompt",
                format!(
                    "{:?}: a LoRA tag is <lora:name> or <lora:name:weight>",
                    &tag[..=end]
                ),
            ));
        }
        let weight = match weight {
            None => 1.0,
            Some(w) => w.trim().parse::<f64>().map_err(|_| {
                InvalidParam::new(
                    "prompt",
                    format!("{:?}: the weight is not a number", &tag[..=end]),
                )
            })?,
        };
        let parsed = LoraUse::new(name, weight)
            .map_err(|e| InvalidParam::new("prompt", format!("{:?}: {}", &tag[..=end], e.message)))?;
        uses.push(parsed);
        rest = &tag[end + 1..];
    }
    if uses.is_empty() {
        // A prompt without tags is left exactly as written.
        return Ok((prompt.to_owned(), uses));
    }
    text.push_str(rest);
    Ok((tidy(&text), uses))
}

/// The start of the next `<lora:` (any case), if any.
fn find_tag(s: &str) -> Option<usize> {
    s.char_indices()
        .find(|(i, _)| s[*i..].get(..6).is_some_and(|p| p.eq_ignore_ascii_case("<lora:")))
        .map(|(i, _)| i)
}

/// Collapses the runs of spaces and the empty comma-separated pieces a removed tag leaves.
fn tidy(s: &str) -> String {
    s.split(',')
        .map(|piece| piece.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_taken_out_and_malformed_ones_refused() {
        let (text, uses) = extract("a cat <lora:pixel-art:0.8>, sitting, <LORA:ink>  on a mat").unwrap();
        assert_eq!(text, "a cat, sitting, on a mat");
        assert_eq!(
            uses,
            [
                LoraUse {
                    name: "pixel-art".into(),
                    weight: 0.8
                },
                LoraUse {
                    name: "ink".into(),
                    weight: 1.0
                }
            ]
        );
        assert_eq!(
            extract("no tags, here").unwrap(),
            ("no tags, here".into(), vec![])
        );
        for bad in [
            "<lora:x",
            "<lora::1>",
            "<lora:x:big>",
            "<lora:x:1:2>",
            "<lora:x:99>",
            "<lora:x:NaN>",
        ] {
            let e = extract(bad).unwrap_err().to_string();
            assert!(e.contains("prompt"), "{bad}: {e}");
        }
        assert_eq!("a:0.5".parse::<LoraUse>().unwrap().weight, 0.5);
        assert_eq!(
            "dir/a.safetensors".parse::<LoraUse>().unwrap().name,
            "dir/a.safetensors"
        );
        assert!("a:9".parse::<LoraUse>().is_err());
        assert_eq!("a:0.5".parse::<LoraUse>().unwrap().tag(), "<lora:a:0.5>");
    }
}
