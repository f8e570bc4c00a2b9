//! Generation parameters in the user's words: sizes like `512x768`, sampler names like `dpm++2m`.

use crate::InvalidParam;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Width and height of an image in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

impl ImageSize {
    /// A size of `width` × `height` pixels.
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    /// Number of pixels.
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for ImageSize {
    type Err = InvalidParam;

    /// Parses `WxH` (also `W×H` and `W*H`), as the OpenAI `size` field and the CLI write it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            InvalidParam::new(
                "size",
                format!("expected WIDTHxHEIGHT such as 512x512, got {s:?}"),
            )
        };
        let (w, h) = s.trim().split_once(['x', 'X', '×', '*']).ok_or_else(bad)?;
        let w: u32 = w.trim().parse().map_err(|_| bad())?;
        let h: u32 = h.trim().parse().map_err(|_| bad())?;
        Ok(Self::new(w, h))
    }
}

/// The samplers NanoImg offers, by the names users know from other tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SchedulerName {
    /// Euler (k-diffusion's `sample_euler`, diffusers' `EulerDiscreteScheduler`).
    Euler,
    /// Euler ancestral: adds fresh noise each step.
    EulerAncestral,
    /// DDIM with η = 0.
    Ddim,
    /// DPM-Solver++ (2M) with Karras sigmas.
    DpmPp2mKarras,
    /// The latent consistency models' multistep sampler (diffusers' `LCMScheduler`): for LCM
    /// models and LCM-LoRAs, in 2–8 steps.
    Lcm,
    /// Trajectory consistency distillation's sampler (diffusers' `TCDScheduler`, γ = 0.3): for
    /// TCD and Hyper-SD LoRAs.
    Tcd,
}

impl SchedulerName {
    /// Every scheduler, in the order `--help` lists them.
    pub const ALL: [SchedulerName; 6] = [
        SchedulerName::Euler,
        SchedulerName::EulerAncestral,
        SchedulerName::Ddim,
        SchedulerName::DpmPp2mKarras,
        SchedulerName::Lcm,
        SchedulerName::Tcd,
    ];

    /// The canonical name, as accepted by [`FromStr`] and written into image metadata.
    pub fn as_str(&self) -> &'static str {
        match self {
            SchedulerName::Euler => "euler",
            SchedulerName::EulerAncestral => "euler_a",
            SchedulerName::Ddim => "ddim",
            SchedulerName::DpmPp2mKarras => "dpm++2m_karras",
            SchedulerName::Lcm => "lcm",
            SchedulerName::Tcd => "tcd",
        }
    }
}

impl SchedulerName {
    /// The name Automatic1111 writes in a PNG's `parameters` text, and its `Schedule type` where
    /// the sampler has one (A1111 and ComfyUI read both back; [`FromStr`] reads the name).
    pub fn a1111(&self) -> (&'static str, Option<&'static str>) {
        match self {
            SchedulerName::Euler => ("Euler", None),
            SchedulerName::EulerAncestral => ("Euler a", None),
            SchedulerName::Ddim => ("DDIM", None),
            SchedulerName::DpmPp2mKarras => ("DPM++ 2M", Some("Karras")),
            SchedulerName::Lcm => ("LCM", None),
            SchedulerName::Tcd => ("TCD", None),
        }
    }
}

impl fmt::Display for SchedulerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<SchedulerName> for String {
    fn from(s: SchedulerName) -> String {
        s.as_str().to_owned()
    }
}

impl TryFrom<String> for SchedulerName {
    type Error = InvalidParam;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for SchedulerName {
    type Err = InvalidParam;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .collect();
        match key.as_str() {
            "euler" => Ok(SchedulerName::Euler),
            "eulera" | "eulerancestral" => Ok(SchedulerName::EulerAncestral),
            "ddim" => Ok(SchedulerName::Ddim),
            "dpm++2m" | "dpm++2mkarras" | "dpmpp2m" | "dpmpp2mkarras" | "dpmsolver++" => {
                Ok(SchedulerName::DpmPp2mKarras)
            }
            "lcm" => Ok(SchedulerName::Lcm),
            "tcd" => Ok(SchedulerName::Tcd),
            _ => Err(InvalidParam::new(
                "scheduler",
                format!(
                    "unknown scheduler {s:?}; choose one of: {}",
                    SchedulerName::ALL.map(|s| s.as_str()).join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_names_read_back() {
        for s in SchedulerName::ALL {
            let (name, schedule) = s.a1111();
            let full = format!("{name} {}", schedule.unwrap_or_default());
            assert_eq!(full.trim().parse::<SchedulerName>().unwrap(), s, "{full}");
        }
    }

    #[test]
    fn size_parses_common_spellings() {
        assert_eq!("512x768".parse::<ImageSize>().unwrap(), ImageSize::new(512, 768));
        assert_eq!(" 64 X 32 ".parse::<ImageSize>().unwrap(), ImageSize::new(64, 32));
        assert_eq!(
            "1024×1024".parse::<ImageSize>().unwrap(),
            ImageSize::new(1024, 1024)
        );
    }

    #[test]
    fn size_rejects_garbage_with_param_name() {
        for bad in ["", "512", "ax b", "-1x5", "512x", "99999999999x1"] {
            let err = bad.parse::<ImageSize>().unwrap_err();
            assert_eq!(err.param, "size", "{bad}");
        }
    }

    #[test]
    fn scheduler_names_round_trip_and_accept_aliases() {
        for s in SchedulerName::ALL {
            assert_eq!(s.as_str().parse::<SchedulerName>().unwrap(), s);
        }
        assert_eq!(
            "DPM++ 2M Karras".parse::<SchedulerName>().unwrap(),
            SchedulerName::DpmPp2mKarras
        );
        assert_eq!(
            "Euler a".parse::<SchedulerName>().unwrap(),
            SchedulerName::EulerAncestral
        );
        assert_eq!(
            serde_json::to_string(&SchedulerName::DpmPp2mKarras).unwrap(),
            "\"dpm++2m_karras\""
        );
        assert_eq!(
            serde_json::from_str::<SchedulerName>("\"euler a\"").unwrap(),
            SchedulerName::EulerAncestral
        );
        let err = "plms".parse::<SchedulerName>().unwrap_err();
        assert!(err.message.contains("euler_a"), "{}", err.message);
    }
}
