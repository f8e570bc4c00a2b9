//! Hook points inside the UNet, for conditioning that is not in the checkpoint: reference
//! attention (extra self-attention keys/values), AdaIN on block outputs, and extra
//! cross-attention branches (IP-Adapter style).
//!
//! A hook is per-request state: it is passed to [`super::UNet2DConditionModel::forward`] and never
//! stored in the shared model. With no hook the UNet takes no extra branch and allocates nothing.

use candle_core::{Result, Tensor};
use std::fmt;

/// Which part of the UNet a block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Down,
    Mid,
    Up,
}

/// Where a hook fires: stage, block index, layer index within the block and, for attention
/// hooks, the transformer block index within `attentions.{layer}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub stage: Stage,
    pub block: usize,
    pub layer: usize,
    pub transformer: usize,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.stage {
            Stage::Down => "down",
            Stage::Mid => "mid",
            Stage::Up => "up",
        };
        write!(f, "{stage}.{}.{}.{}", self.block, self.layer, self.transformer)
    }
}

/// What kind of block output [`UNetHooks::block_output`] sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockKind {
    Resnet,
    Attention,
}

/// Keys and values for an extra cross-attention branch, already projected to the attention's
/// inner dimension (`[batch, tokens, inner_dim]`), and the weight of that branch.
#[derive(Debug, Clone)]
pub struct ExtraCrossAttention {
    pub keys: Tensor,
    pub values: Tensor,
    pub scale: f64,
}

/// Extra self-attention tokens ("reference-only" attention) and how much of the attention's
/// output should come from them.
#[derive(Debug, Clone)]
pub struct SelfAttentionExtra {
    /// `[1 or b, extra_tokens, channels]`; one set is shared by the whole batch.
    pub tokens: Tensor,
    /// `[b, 1, 1]`: per batch element, the weight `w` of the attention over own ⊕ extra tokens;
    /// the output is `(1 − w)·attn(own) + w·attn(own ⊕ extra)`. `None` means `w = 1` everywhere.
    pub weights: Option<Tensor>,
}

/// Per-request conditioning hooks. Every method has a do-nothing default; implementors override
/// the ones they need. Methods take `&self`: implementations that record (a reference "write"
/// pass) use interior mutability.
pub trait UNetHooks: Send + Sync {
    /// Called with the normalised input of every self-attention (`[b, tokens, channels]`).
    /// Returning `Some(extra)` appends `extra.tokens` to the tokens the keys and values are
    /// computed from ("reference-only" attention). Recording passes store `hidden` and return
    /// `None`.
    fn self_attention_context(&self, _site: Site, _hidden: &Tensor) -> Result<Option<SelfAttentionExtra>> {
        Ok(None)
    }

    /// Called after every resnet and attention block with its output (`[b, c, h, w]`); may
    /// return a replacement (AdaIN toward reference statistics).
    fn block_output(&self, _site: Site, _kind: BlockKind, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// An additional cross-attention branch for this site, added to the text cross-attention's
    /// output (IP-Adapter's decoupled cross-attention).
    fn extra_cross_attention(&self, _site: Site) -> Result<Option<ExtraCrossAttention>> {
        Ok(None)
    }
}

/// Runs the block-output hook if there is one.
pub(crate) fn after_block(
    hooks: Option<&dyn UNetHooks>,
    site: Site,
    kind: BlockKind,
    x: Tensor,
) -> Result<Tensor> {
    match hooks {
        Some(h) => Ok(h.block_output(site, kind, &x)?.unwrap_or(x)),
        None => Ok(x),
    }
}
