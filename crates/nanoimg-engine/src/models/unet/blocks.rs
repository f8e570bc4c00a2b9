//! The UNet's down, mid and up blocks (`CrossAttnDownBlock2D`/`DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`).

use super::attention::{Transformer2DModel, TransformerSpec};
use super::hooks::{after_block, BlockKind, Site, Stage, UNetHooks};
use crate::models::int8::Quantize;
use crate::models::layers::{Downsample2D, ResnetBlock2D, Upsample2D};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// What every resnet in the UNet shares: time-embedding width and group-norm settings.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSpec {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
}

impl ResnetSpec {
    fn build(&self, vb: VarBuilder, cin: usize, cout: usize) -> Result<ResnetBlock2D> {
        ResnetBlock2D::new(vb, cin, cout, Some(self.temb), self.groups, self.eps)
    }
}

/// `attentions.{0..layers}` of a cross-attention block; none for a plain block.
fn attentions(
    vb: &VarBuilder,
    layers: usize,
    attn: Option<TransformerSpec>,
) -> Result<Vec<Transformer2DModel>> {
    match attn {
        Some(spec) => (0..layers)
            .map(|j| Transformer2DModel::new(vb.pp("attentions").pp(j), spec))
            .collect(),
        None => Ok(Vec::new()),
    }
}

fn site(stage: Stage, block: usize, layer: usize) -> Site {
    Site {
        stage,
        block,
        layer,
        transformer: 0,
    }
}

/// A down block: `layers` resnets (each followed by a transformer in cross-attention blocks),
/// then an optional stride-2 downsampler.
#[derive(Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn new(
        vb: VarBuilder,
        (cin, cout): (usize, usize),
        r: ResnetSpec,
        layers: usize,
        attn: Option<TransformerSpec>,
        downsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|j| r.build(vb.pp("resnets").pp(j), if j == 0 { cin } else { cout }, cout))
            .collect::<Result<_>>()?;
        let attentions = attentions(&vb, layers, attn)?;
        let downsampler = downsample
            .then(|| Downsample2D::new(vb.pp("downsamplers").pp(0), cout, false))
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the output and the skip connections it produced.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        index: usize,
        hooks: Option<&dyn UNetHooks>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (j, resnet) in self.resnets.iter().enumerate() {
            let s = site(Stage::Down, index, j);
            x = after_block(hooks, s, BlockKind::Resnet, resnet.forward(&x, Some(temb))?)?;
            if let Some(attn) = self.attentions.get(j) {
                x = after_block(
                    hooks,
                    s,
                    BlockKind::Attention,
                    attn.forward(&x, context, s, hooks)?,
                )?;
            }
            skips.push(x.clone());
        }
        if let Some(d) = &self.downsampler {
            x = d.forward(&x)?;
            skips.push(x.clone());
        }
        Ok((x, skips))
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
#[derive(Debug)]
pub struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Transformer2DModel,
}

impl MidBlock {
    pub fn new(vb: VarBuilder, ch: usize, r: ResnetSpec, spec: TransformerSpec) -> Result<Self> {
        let r = |j: usize| r.build(vb.pp("resnets").pp(j), ch, ch);
        Ok(Self {
            resnets: [r(0)?, r(1)?],
            attention: Transformer2DModel::new(vb.pp("attentions").pp(0), spec)?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        hooks: Option<&dyn UNetHooks>,
    ) -> Result<Tensor> {
        let s0 = site(Stage::Mid, 0, 0);
        let x = after_block(
            hooks,
            s0,
            BlockKind::Resnet,
            self.resnets[0].forward(x, Some(temb))?,
        )?;
        let x = after_block(
            hooks,
            s0,
            BlockKind::Attention,
            self.attention.forward(&x, context, s0, hooks)?,
        )?;
        let s1 = site(Stage::Mid, 0, 1);
        after_block(
            hooks,
            s1,
            BlockKind::Resnet,
            self.resnets[1].forward(&x, Some(temb))?,
        )
    }
}

/// An up block: `layers` resnets over the input concatenated with a skip connection (each
/// followed by a transformer in cross-attention blocks), then an optional upsampler.
#[derive(Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `channels` is (input, output, previous block's output), as diffusers names them.
    pub fn new(
        vb: VarBuilder,
        (cin, cout, prev_out): (usize, usize, usize),
        r: ResnetSpec,
        layers: usize,
        attn: Option<TransformerSpec>,
        upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|j| {
                let skip = if j + 1 == layers { cin } else { cout };
                let input = if j == 0 { prev_out } else { cout };
                r.build(vb.pp("resnets").pp(j), input + skip, cout)
            })
            .collect::<Result<_>>()?;
        let attentions = attentions(&vb, layers, attn)?;
        let upsampler = upsample
            .then(|| Upsample2D::new(vb.pp("upsamplers").pp(0), cout))
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// How many skip connections this block consumes.
    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are consumed from the last; `size` is the spatial size to upsample to.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        size: Option<(usize, usize)>,
        index: usize,
        hooks: Option<&dyn UNetHooks>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (j, (resnet, skip)) in self.resnets.iter().zip(skips.iter().rev()).enumerate() {
            let s = site(Stage::Up, index, j);
            let input = Tensor::cat(&[&x, skip], 1)?;
            x = after_block(hooks, s, BlockKind::Resnet, resnet.forward(&input, Some(temb))?)?;
            if let Some(attn) = self.attentions.get(j) {
                x = after_block(
                    hooks,
                    s,
                    BlockKind::Attention,
                    attn.forward(&x, context, s, hooks)?,
                )?;
            }
        }
        match &self.upsampler {
            Some(u) => u.forward(&x, size),
            None => Ok(x),
        }
    }
}

impl Quantize for DownBlock {
    fn quantize_int8(&mut self) -> Result<()> {
        self.resnets.quantize_int8()?;
        self.attentions.quantize_int8()?;
        self.downsampler.quantize_int8()
    }
}

impl Quantize for MidBlock {
    fn quantize_int8(&mut self) -> Result<()> {
        self.resnets.iter_mut().try_for_each(Quantize::quantize_int8)?;
        self.attention.quantize_int8()
    }
}

impl Quantize for UpBlock {
    fn quantize_int8(&mut self) -> Result<()> {
        self.resnets.quantize_int8()?;
        self.attentions.quantize_int8()?;
        self.upsampler.quantize_int8()
    }
}
