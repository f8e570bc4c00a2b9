//! diffusers' `AutoencoderTiny`: the tiny autoencoders distilled from the full VAEs (TAESD for
//! SD 1.x/2.x, TAESDXL for SDXL, TAEF1 for FLUX with 16 latent channels). Plain 3×3
//! convolutions and ReLUs, no attention and no normalisation: roughly a tenth of the full
//! decoder's work, at some cost in detail.
//!
//! Names mirror diffusers' checkpoint: `encoder.layers.{k}` and `decoder.layers.{k}`, `k`
//! counting the `nn.Sequential` entries (weightless ones — ReLU, upsampling — included), each
//! block `conv.{0,2,4}` and an optional 1×1 `skip`.

use crate::models::conv::Conv2d;
use crate::models::int8::Quantize;
use crate::models::layers::{conv2d, conv2d_no_bias};
use crate::ConfigError;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

/// The fields of an `AutoencoderTiny` config.json that we read.
#[derive(Debug, Clone, Deserialize)]
pub struct TinyVaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default = "sixty_four")]
    pub encoder_block_out_channels: Vec<usize>,
    #[serde(default = "sixty_four")]
    pub decoder_block_out_channels: Vec<usize>,
    #[serde(default = "relu")]
    pub act_fn: String,
    #[serde(default = "nearest")]
    pub upsample_fn: String,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "two")]
    pub upsampling_scaling_factor: usize,
    #[serde(default = "encoder_blocks")]
    pub num_encoder_blocks: Vec<usize>,
    #[serde(default = "decoder_blocks")]
    pub num_decoder_blocks: Vec<usize>,
    #[serde(default = "unit")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn unit() -> f64 {
    1.0
}
fn sixty_four() -> Vec<usize> {
    vec![64; 4]
}
fn encoder_blocks() -> Vec<usize> {
    vec![1, 3, 3, 3]
}
fn decoder_blocks() -> Vec<usize> {
    vec![3, 3, 3, 1]
}
fn relu() -> String {
    "relu".into()
}
fn nearest() -> String {
    "nearest".into()
}

impl TinyVaeConfig {
    /// How much smaller the latent is than the image per side.
    pub fn downscale(&self) -> usize {
        1 << (self.encoder_block_out_channels.len().saturating_sub(1))
    }

    /// Rejects configurations we would compute wrongly.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let (enc, dec) = (&self.encoder_block_out_channels, &self.decoder_block_out_channels);
        if enc.is_empty() || dec.is_empty() {
            return Err(ConfigError::invalid("block_out_channels", "is empty"));
        }
        if enc.len() != self.num_encoder_blocks.len() {
            return Err(ConfigError::invalid(
                "num_encoder_blocks",
                "needs one count per encoder_block_out_channels",
            ));
        }
        if dec.len() != self.num_decoder_blocks.len() {
            return Err(ConfigError::invalid(
                "num_decoder_blocks",
                "needs one count per decoder_block_out_channels",
            ));
        }
        // diffusers builds each level's first convolution from that level's width alone.
        if enc.windows(2).any(|w| w[0] != w[1]) || dec.windows(2).any(|w| w[0] != w[1]) {
            return Err(ConfigError::invalid(
                "block_out_channels",
                "levels of different widths are not built by diffusers' AutoencoderTiny",
            ));
        }
        if self.act_fn != "relu" {
            return Err(ConfigError::unsupported("act_fn", &self.act_fn));
        }
        if self.upsample_fn != "nearest" {
            return Err(ConfigError::unsupported("upsample_fn", &self.upsample_fn));
        }
        if self.upsampling_scaling_factor != 2 {
            return Err(ConfigError::invalid(
                "upsampling_scaling_factor",
                "only 2 is supported",
            ));
        }
        Ok(())
    }
}

/// `AutoencoderTinyBlock`: three 3×3 convolutions with ReLUs between, a skip connection, a ReLU
/// after the sum.
#[derive(Debug)]
struct Block {
    conv: [Conv2d; 3],
    skip: Option<Conv2d>,
}

impl Block {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let c = vb.pp("conv");
        Ok(Self {
            conv: [
                conv2d(cin, cout, 3, 1, 1, c.pp("0"))?,
                conv2d(cout, cout, 3, 1, 1, c.pp("2"))?,
                conv2d(cout, cout, 3, 1, 1, c.pp("4"))?,
            ],
            skip: (cin != cout)
                .then(|| conv2d_no_bias(cin, cout, 1, 1, 0, vb.pp("skip")))
                .transpose()?,
        })
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv[0].forward(x)?.relu()?;
        let h = self.conv[1].forward(&h)?.relu()?;
        let h = self.conv[2].forward(&h)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        (h + skip)?.relu()
    }
}

impl Quantize for Block {
    fn quantize_int8(&mut self) -> Result<()> {
        self.conv.iter_mut().try_for_each(Conv2d::quantize_int8)?;
        self.skip.quantize_int8()
    }
}

/// One entry of the encoder's or decoder's `nn.Sequential`.
#[derive(Debug)]
enum Layer {
    Conv(Conv2d),
    Block(Block),
    Relu,
    /// Nearest-neighbour upsampling by 2.
    Upsample,
}

impl Module for Layer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::Block(b) => b.forward(x),
            Layer::Relu => x.relu(),
            Layer::Upsample => {
                let (_, _, h, w) = x.dims4()?;
                x.upsample_nearest2d(2 * h, 2 * w)
            }
        }
    }
}

/// Layers numbered as `nn.Sequential` numbers them.
struct Sequential<'a> {
    vb: VarBuilder<'a>,
    layers: Vec<Layer>,
}

impl Sequential<'_> {
    /// The VarBuilder of the next entry.
    fn next(&self) -> VarBuilder<'_> {
        self.vb.pp(self.layers.len().to_string())
    }

    fn conv(&mut self, cin: usize, cout: usize, stride: usize, bias: bool) -> Result<()> {
        let c = if bias {
            conv2d(cin, cout, 3, stride, 1, self.next())?
        } else {
            conv2d_no_bias(cin, cout, 3, stride, 1, self.next())?
        };
        self.layers.push(Layer::Conv(c));
        Ok(())
    }

    fn blocks(&mut self, n: usize, ch: usize) -> Result<()> {
        for _ in 0..n {
            let b = Block::new(self.next(), ch, ch)?;
            self.layers.push(Layer::Block(b));
        }
        Ok(())
    }
}

impl Quantize for Layer {
    fn quantize_int8(&mut self) -> Result<()> {
        match self {
            Layer::Conv(c) => c.quantize_int8(),
            Layer::Block(b) => b.quantize_int8(),
            Layer::Relu | Layer::Upsample => Ok(()),
        }
    }
}

fn run(layers: &[Layer], x: &Tensor) -> Result<Tensor> {
    layers.iter().try_fold(x.clone(), |x, l| l.forward(&x))
}

/// The tiny autoencoder: images in [-1, 1] ↔ the UNet's (scaled) latents.
#[derive(Debug)]
pub struct AutoencoderTiny {
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    config: TinyVaeConfig,
    int8: bool,
}

impl AutoencoderTiny {
    /// Loads from a VarBuilder rooted at the checkpoint (`encoder.*`, `decoder.*`).
    pub fn new(vb: VarBuilder, c: &TinyVaeConfig) -> Result<Self> {
        // EncoderTiny: per level a convolution (the first from the image, the rest stride 2
        // without bias) and its blocks; a last convolution to the latent channels.
        let mut enc = Sequential {
            vb: vb.pp("encoder").pp("layers"),
            layers: Vec::new(),
        };
        for (i, (&ch, &n)) in c
            .encoder_block_out_channels
            .iter()
            .zip(&c.num_encoder_blocks)
            .enumerate()
        {
            if i == 0 {
                enc.conv(c.in_channels, ch, 1, true)?;
            } else {
                enc.conv(ch, ch, 2, false)?;
            }
            enc.blocks(n, ch)?;
        }
        let last = *c.encoder_block_out_channels.last().unwrap_or(&64);
        enc.conv(last, c.latent_channels, 1, true)?;

        // DecoderTiny: a convolution from the latents and a ReLU; per level its blocks, then
        // (but for the last) an upsampling, and a convolution (bias only on the last, to RGB).
        let first = *c.decoder_block_out_channels.first().unwrap_or(&64);
        let mut dec = Sequential {
            vb: vb.pp("decoder").pp("layers"),
            layers: Vec::new(),
        };
        dec.conv(c.latent_channels, first, 1, true)?;
        dec.layers.push(Layer::Relu);
        let levels = c.decoder_block_out_channels.len();
        for (i, (&ch, &n)) in c
            .decoder_block_out_channels
            .iter()
            .zip(&c.num_decoder_blocks)
            .enumerate()
        {
            let last = i + 1 == levels;
            dec.blocks(n, ch)?;
            if !last {
                dec.layers.push(Layer::Upsample);
            }
            dec.conv(ch, if last { c.out_channels } else { ch }, 1, last)?;
        }
        Ok(Self {
            encoder: enc.layers,
            decoder: dec.layers,
            config: c.clone(),
            int8: false,
        })
    }

    /// Puts the decoder's convolutions on int8 weights (activations quantized as they arrive,
    /// one scale per image: after ReLUs they are never negative), but for the first (from the
    /// 4 latent channels) and the last (to RGB), where the error would land straight in the
    /// input or the picture. The encoder stays f32: it runs once per edit, not per picture.
    pub fn quantize_decoder_int8(&mut self) -> Result<()> {
        let n = self.decoder.len();
        for layer in self.decoder.iter_mut().take(n.saturating_sub(1)).skip(1) {
            layer.quantize_int8()?;
        }
        self.int8 = true;
        Ok(())
    }

    /// Whether the decoder runs on int8 weights.
    pub fn is_int8(&self) -> bool {
        self.int8
    }

    /// The config.
    pub fn config(&self) -> &TinyVaeConfig {
        &self.config
    }

    /// Encodes images in [-1, 1] to the UNet's latents.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let latents = run(&self.encoder, &((images + 1.0)? / 2.0)?)?;
        let shift = self.config.shift_factor.unwrap_or(0.0);
        (latents - shift)? * self.config.scaling_factor
    }

    /// Decodes the UNet's latents to images in roughly [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        let z = ((latents / self.config.scaling_factor)? + shift)?;
        // diffusers clamps the latents softly to ±3 first.
        let z = ((z / 3.0)?.tanh()? * 3.0)?;
        (run(&self.decoder, &z)? * 2.0)? - 1.0
    }
}
