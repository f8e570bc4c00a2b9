//! Conversions between images and tensors, noise from seeds, and latent previews.

use candle_core::{DType, Device, Result, Tensor};
use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Unit-normal noise from one seed, generated on the CPU so that the same seed gives the same
/// noise on every device and in every precision.
#[derive(Debug)]
pub struct SeededNoise {
    rng: ChaCha8Rng,
}

impl SeededNoise {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next `shape`-sized block of noise, on `device` in `dtype`.
    pub fn sample(&mut self, shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut self.rng)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}

/// An RGB image as `[1, 3, H, W]` in [-1, 1].
pub fn image_to_tensor(img: &RgbImage, device: &Device, dtype: DType) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img.as_raw().iter().map(|&b| b as f32 / 127.5 - 1.0).collect();
    Tensor::from_vec(data, (h as usize, w as usize, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// A `[1, 3, H, W]` tensor in [-1, 1] as an RGB image (values outside are clipped).
pub fn tensor_to_image(t: &Tensor) -> Result<RgbImage> {
    let (_, c, h, w) = t.dims4()?;
    if c != 3 {
        candle_core::bail!("expected 3 channels, got {c}");
    }
    let t = ((t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.squeeze(0)? + 1.0)? * 127.5)?
        .clamp(0.0, 255.0)?
        .round()?
        .permute((1, 2, 0))?
        .flatten_all()?;
    let bytes: Vec<u8> = t.to_vec1::<f32>()?.into_iter().map(|v| v as u8).collect();
    RgbImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| candle_core::Error::Msg("image buffer size".into()))
}

/// A mask image as `[1, 1, h, w]` in [0, 1] (white = repaint), area-averaged down to `(h, w)`.
pub fn mask_to_tensor(
    mask: &GrayImage,
    (h, w): (usize, usize),
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let (mw, mh) = mask.dimensions();
    let data: Vec<f32> = mask.as_raw().iter().map(|&b| b as f32 / 255.0).collect();
    let full = Tensor::from_vec(data, (1, 1, mh as usize, mw as usize), &Device::Cpu)?;
    let small = if (mh as usize, mw as usize) == (h, w) {
        full
    } else if (mh as usize).is_multiple_of(h)
        && (mw as usize).is_multiple_of(w)
        && mh as usize / h == mw as usize / w
    {
        full.avg_pool2d(mh as usize / h)?
    } else {
        // Sizes are validated to be multiples of the VAE scale, so this is only a fallback.
        full.upsample_nearest2d(h, w)?
    };
    small.to_dtype(dtype)?.to_device(device)
}

/// Approximate RGB of SD-family 4-channel latents: a fixed linear map, the well-known
/// "latent to RGB" factors used for live previews (no VAE decode).
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// A latent-sized RGB preview of `[1, C, h, w]` latents.
pub fn latent_preview(latents: &Tensor) -> Result<RgbImage> {
    let lat = latents
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .squeeze(0)?;
    let (c, h, w) = lat.dims3()?;
    let rgb = if c == 4 {
        let m = Tensor::new(&LATENT_RGB, &Device::Cpu)?; // [4, 3]
        m.t()?.matmul(&lat.reshape((4, h * w))?)?.reshape((3, h, w))?
    } else {
        // Other latent spaces: show the first three channels.
        lat.narrow(0, 0, c.min(3))?
            .repeat((if c < 3 { 3 } else { 1 }, 1, 1))?
            .narrow(0, 0, 3)?
    };
    tensor_to_image(&rgb.unsqueeze(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tensor_round_trip_is_exact() {
        let img = RgbImage::from_fn(16, 8, |x, y| {
            image::Rgb([x as u8 * 15, y as u8 * 30, 255 - x as u8])
        });
        let t = image_to_tensor(&img, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(t.dims(), &[1, 3, 8, 16]);
        assert_eq!(tensor_to_image(&t).unwrap(), img);
    }

    #[test]
    fn seeded_noise_is_reproducible_and_seed_dependent() {
        let a = SeededNoise::new(7)
            .sample(&[2, 3], &Device::Cpu, DType::F32)
            .unwrap();
        let b = SeededNoise::new(7)
            .sample(&[2, 3], &Device::Cpu, DType::F32)
            .unwrap();
        let c = SeededNoise::new(8)
            .sample(&[2, 3], &Device::Cpu, DType::F32)
            .unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
    }

    #[test]
    fn mask_is_area_averaged_to_latent_size() {
        let mask = GrayImage::from_fn(16, 16, |x, _| image::Luma([if x < 8 { 255 } else { 0 }]));
        let m = mask_to_tensor(&mask, (2, 2), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(
            m.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, 0.0, 1.0, 0.0]
        );
    }
}
