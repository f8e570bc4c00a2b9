//! Banks: what the write pass records from the reference at one step (self-attention inputs and
//! block-output statistics), and the hooks that record and read them.

use super::Combine;
use crate::models::unet::hooks::{BlockKind, SelfAttentionExtra, Site, UNetHooks};
use candle_core::{DType, Result, Tensor, D};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Added to the variance before the square root, as diffusers' reference AdaIN does.
const EPS: f64 = 1e-6;

/// Self-attention sites with their widths, in the order the UNet reached them.
pub type AttentionSites = Vec<(Site, usize)>;
/// Block outputs with their widths, in the order the UNet reached them.
pub type BlockSites = Vec<(Site, BlockKind, usize)>;

/// One step's recording of the reference.
#[derive(Debug, Default)]
pub struct StepBank {
    /// Self-attention inputs per site: `[1, tokens, channels]` (tokens × references when
    /// concatenated).
    pub attention: HashMap<Site, Tensor>,
    /// Per block output: the reference's per-channel mean and standard deviation, `[1, c, 1, 1]`,
    /// averaged over the references.
    pub stats: HashMap<(Site, BlockKind), (Tensor, Tensor)>,
}

impl StepBank {
    /// Bytes held by the tensors.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.attention.values().map(size).sum::<usize>()
            + self.stats.values().map(|(m, s)| size(m) + size(s)).sum::<usize>()
    }
}

/// Which sites use the reference: the widest layers first (diffusers' reference pipeline sorts
/// its attention modules by width, and its gate weight keeps a leading fraction of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates {
    pub attention: HashSet<Site>,
    pub adain: HashSet<(Site, BlockKind)>,
}

impl Gates {
    /// The leading `attention` and `adain` fractions of the sites, widest first; ties keep the
    /// order the UNet reaches them.
    pub fn choose(
        attention_sites: &[(Site, usize)],
        block_sites: &[(Site, BlockKind, usize)],
        attention: f64,
        adain: f64,
    ) -> Self {
        let keep = |n: usize, frac: f64| ((n as f64) * frac).round() as usize;
        let mut a: Vec<_> = attention_sites.to_vec();
        a.sort_by_key(|(_, width)| std::cmp::Reverse(*width));
        let mut b: Vec<_> = block_sites.to_vec();
        b.sort_by_key(|(_, _, width)| std::cmp::Reverse(*width));
        Self {
            attention: a.iter().take(keep(a.len(), attention)).map(|(s, _)| *s).collect(),
            adain: b
                .iter()
                .take(keep(b.len(), adain))
                .map(|(s, k, _)| (*s, *k))
                .collect(),
        }
    }
}

/// Per-sample, per-channel mean and standard deviation of `[b, c, h, w]` (in f32).
pub fn channel_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let x = x.to_dtype(DType::F32)?;
    let (b, c, h, w) = x.dims4()?;
    let flat = x.reshape((b, c, h * w))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let var = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(D::Minus1)?;
    let std = (var + EPS)?.sqrt()?;
    Ok((mean.reshape((b, c, 1, 1))?, std.reshape((b, c, 1, 1))?))
}

/// AdaIN: `x` with each sample's channels moved to `mean`/`std` (`[1, c, 1, 1]`).
pub fn adain(x: &Tensor, mean: &Tensor, std: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let (m, s) = channel_stats(x)?;
    let x32 = x.to_dtype(DType::F32)?;
    x32.broadcast_sub(&m)?
        .broadcast_div(&s)?
        .broadcast_mul(std)?
        .broadcast_add(mean)?
        .to_dtype(dtype)
}

/// The write pass: records the reference batch's self-attention inputs and block statistics.
/// With no gates yet (the first step) it records every site and remembers their widths.
pub struct Writer<'a> {
    combine: Combine,
    gates: Option<&'a Gates>,
    attention: Mutex<Vec<(Site, Tensor)>>,
    stats: Mutex<Vec<(Site, BlockKind, Tensor, Tensor)>>,
}

impl<'a> Writer<'a> {
    pub fn new(combine: Combine, gates: Option<&'a Gates>) -> Self {
        Self {
            combine,
            gates,
            attention: Mutex::new(Vec::new()),
            stats: Mutex::new(Vec::new()),
        }
    }

    /// Every recorded site with its width, in the order the UNet reached it.
    pub fn sites(&self) -> (AttentionSites, BlockSites) {
        let a = lock(&self.attention)
            .iter()
            .map(|(s, t)| (*s, t.dim(2).unwrap_or(0)))
            .collect();
        let b = lock(&self.stats)
            .iter()
            .map(|(s, k, m, _)| (*s, *k, m.dim(1).unwrap_or(0)))
            .collect();
        (a, b)
    }

    /// The recording as a bank, keeping only the gated sites.
    pub fn into_bank(self, gates: &Gates) -> StepBank {
        let attention = into_inner(self.attention)
            .into_iter()
            .filter(|(s, _)| gates.attention.contains(s))
            .collect();
        let stats = into_inner(self.stats)
            .into_iter()
            .filter(|(s, k, _, _)| gates.adain.contains(&(*s, *k)))
            .map(|(s, k, m, d)| ((s, k), (m, d)))
            .collect();
        StepBank { attention, stats }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner().unwrap_or_else(|e| e.into_inner())
}

impl UNetHooks for Writer<'_> {
    fn self_attention_context(&self, site: Site, hidden: &Tensor) -> Result<Option<SelfAttentionExtra>> {
        if self.gates.is_some_and(|g| !g.attention.contains(&site)) {
            return Ok(None);
        }
        let (r, t, c) = hidden.dims3()?;
        let tokens = match self.combine {
            Combine::Concat => hidden.reshape((1, r * t, c))?,
            Combine::Average => hidden.mean_keepdim(0)?,
        };
        lock(&self.attention).push((site, tokens));
        Ok(None)
    }

    fn block_output(&self, site: Site, kind: BlockKind, x: &Tensor) -> Result<Option<Tensor>> {
        if self.gates.is_some_and(|g| !g.adain.contains(&(site, kind))) {
            return Ok(None);
        }
        let (mean, std) = channel_stats(x)?;
        lock(&self.stats).push((site, kind, mean.mean_keepdim(0)?, std.mean_keepdim(0)?));
        Ok(None)
    }
}

/// The real pass: appends the bank's tokens to self-attention and applies AdaIN, each blended by
/// a per-sample weight (`[b, 1, 1]`).
pub struct Reader<'a> {
    bank: &'a StepBank,
    weights: Tensor,
    weights4: Tensor,
    full: bool,
}

impl<'a> Reader<'a> {
    /// `weights[i]` is how much of sample `i`'s attention and block outputs come from the
    /// reference (`0` leaves it as without a reference).
    pub fn new(
        bank: &'a StepBank,
        weights: &[f64],
        dtype: DType,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let w: Vec<f32> = weights.iter().map(|w| *w as f32).collect();
        let b = w.len();
        let t = Tensor::from_vec(w, (b, 1, 1), device)?;
        Ok(Self {
            bank,
            weights: t.to_dtype(dtype)?,
            weights4: t.reshape((b, 1, 1, 1))?,
            full: weights.iter().all(|w| *w == 1.0),
        })
    }
}

impl UNetHooks for Reader<'_> {
    fn self_attention_context(&self, site: Site, _hidden: &Tensor) -> Result<Option<SelfAttentionExtra>> {
        Ok(self.bank.attention.get(&site).map(|tokens| SelfAttentionExtra {
            tokens: tokens.clone(),
            weights: (!self.full).then(|| self.weights.clone()),
        }))
    }

    fn block_output(&self, site: Site, kind: BlockKind, x: &Tensor) -> Result<Option<Tensor>> {
        let Some((mean, std)) = self.bank.stats.get(&(site, kind)) else {
            return Ok(None);
        };
        let moved = adain(x, mean, std)?;
        if self.full {
            return Ok(Some(moved));
        }
        let x32 = x.to_dtype(DType::F32)?;
        let blended = (&x32 + (moved.to_dtype(DType::F32)? - &x32)?.broadcast_mul(&self.weights4)?)?;
        Ok(Some(blended.to_dtype(x.dtype())?))
    }
}
