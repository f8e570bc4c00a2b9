//! MTCNN (Zhang et al., 2016): three small networks in a cascade. P-Net slides over an image
//! pyramid and proposes windows; R-Net (24×24 crops) and O-Net (48×48 crops) reject and refine
//! them. Layer names mirror the checkpoint's (facenet-pytorch's `pnet.pt`, `rnet.pt`,
//! `onet.pt`), and the stages follow its `detect_face`: the thresholds 0.6 / 0.7 / 0.7, a
//! pyramid factor of 0.709, "area" resampling and inputs scaled to (x − 127.5) / 128.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{conv2d, linear, prelu, Conv2d, Linear, PReLU, VarBuilder};

/// Max pooling with PyTorch's `ceil_mode=True`: a last, partial window counts.
fn pool(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let out = |n: usize| n.saturating_sub(k).div_ceil(s) + 1;
    let (ph, pw) = (
        ((out(h) - 1) * s + k).saturating_sub(h),
        ((out(w) - 1) * s + k).saturating_sub(w),
    );
    let mut x = x.clone();
    if ph > 0 {
        let pad = Tensor::full(f32::MIN, (b, c, ph, w), x.device())?;
        x = Tensor::cat(&[&x, &pad], 2)?;
    }
    if pw > 0 {
        let pad = Tensor::full(f32::MIN, (b, c, h + ph, pw), x.device())?;
        x = Tensor::cat(&[&x, &pad], 3)?;
    }
    x.max_pool2d_with_stride(k, s)
}

fn conv(vb: &VarBuilder, name: &str, cin: usize, cout: usize, k: usize) -> Result<Conv2d> {
    conv2d(cin, cout, k, Default::default(), vb.pp(name))
}

/// The proposal network: fully convolutional, a 12×12 window every 2 pixels.
pub struct PNet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    conv4_1: Conv2d,
    conv4_2: Conv2d,
}

impl PNet {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(vb, "conv1", 3, 10, 3)?,
            prelu1: prelu(Some(10), vb.pp("prelu1"))?,
            conv2: conv(vb, "conv2", 10, 16, 3)?,
            prelu2: prelu(Some(16), vb.pp("prelu2"))?,
            conv3: conv(vb, "conv3", 16, 32, 3)?,
            prelu3: prelu(Some(32), vb.pp("prelu3"))?,
            conv4_1: conv(vb, "conv4_1", 32, 2, 1)?,
            conv4_2: conv(vb, "conv4_2", 32, 4, 1)?,
        })
    }

    /// (box regression `[b, 4, h, w]`, face probability `[b, 2, h, w]`).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.prelu1.forward(&self.conv1.forward(x)?)?;
        let x = pool(&x, 2, 2)?;
        let x = self.prelu2.forward(&self.conv2.forward(&x)?)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let prob = candle_nn::ops::softmax(&self.conv4_1.forward(&x)?, 1)?;
        Ok((self.conv4_2.forward(&x)?, prob))
    }
}

/// The refinement network, on 24×24 crops.
pub struct RNet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    dense4: Linear,
    prelu4: PReLU,
    dense5_1: Linear,
    dense5_2: Linear,
}

/// The checkpoints flatten channels last, width before height (`permute(0, 3, 2, 1)`).
fn flatten(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 2, 1))?.contiguous()?.flatten_from(1)
}

impl RNet {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(vb, "conv1", 3, 28, 3)?,
            prelu1: prelu(Some(28), vb.pp("prelu1"))?,
            conv2: conv(vb, "conv2", 28, 48, 3)?,
            prelu2: prelu(Some(48), vb.pp("prelu2"))?,
            conv3: conv(vb, "conv3", 48, 64, 2)?,
            prelu3: prelu(Some(64), vb.pp("prelu3"))?,
            dense4: linear(576, 128, vb.pp("dense4"))?,
            prelu4: prelu(Some(128), vb.pp("prelu4"))?,
            dense5_1: linear(128, 2, vb.pp("dense5_1"))?,
            dense5_2: linear(128, 4, vb.pp("dense5_2"))?,
        })
    }

    /// (box regression `[b, 4]`, face probability `[b, 2]`).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = pool(&self.prelu1.forward(&self.conv1.forward(x)?)?, 3, 2)?;
        let x = pool(&self.prelu2.forward(&self.conv2.forward(&x)?)?, 3, 2)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let x = self.prelu4.forward(&self.dense4.forward(&flatten(&x)?)?)?;
        let prob = candle_nn::ops::softmax(&self.dense5_1.forward(&x)?, D::Minus1)?;
        Ok((self.dense5_2.forward(&x)?, prob))
    }
}

/// The output network, on 48×48 crops (its five landmarks are not used here).
pub struct ONet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    conv4: Conv2d,
    prelu4: PReLU,
    dense5: Linear,
    prelu5: PReLU,
    dense6_1: Linear,
    dense6_2: Linear,
}

impl ONet {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(vb, "conv1", 3, 32, 3)?,
            prelu1: prelu(Some(32), vb.pp("prelu1"))?,
            conv2: conv(vb, "conv2", 32, 64, 3)?,
            prelu2: prelu(Some(64), vb.pp("prelu2"))?,
            conv3: conv(vb, "conv3", 64, 64, 3)?,
            prelu3: prelu(Some(64), vb.pp("prelu3"))?,
            conv4: conv(vb, "conv4", 64, 128, 2)?,
            prelu4: prelu(Some(128), vb.pp("prelu4"))?,
            dense5: linear(1152, 256, vb.pp("dense5"))?,
            prelu5: prelu(Some(256), vb.pp("prelu5"))?,
            dense6_1: linear(256, 2, vb.pp("dense6_1"))?,
            dense6_2: linear(256, 4, vb.pp("dense6_2"))?,
        })
    }

    /// (box regression `[b, 4]`, face probability `[b, 2]`).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = pool(&self.prelu1.forward(&self.conv1.forward(x)?)?, 3, 2)?;
        let x = pool(&self.prelu2.forward(&self.conv2.forward(&x)?)?, 3, 2)?;
        let x = pool(&self.prelu3.forward(&self.conv3.forward(&x)?)?, 2, 2)?;
        let x = self.prelu4.forward(&self.conv4.forward(&x)?)?;
        let x = self.prelu5.forward(&self.dense5.forward(&flatten(&x)?)?)?;
        let prob = candle_nn::ops::softmax(&self.dense6_1.forward(&x)?, D::Minus1)?;
        Ok((self.dense6_2.forward(&x)?, prob))
    }
}

/// A candidate window: corners (inclusive, in pixels), score, and the regression to apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub reg: [f32; 4],
}

/// How overlap is measured in non-maximum suppression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Overlap {
    /// Intersection over union (corner to corner, as torchvision measures it).
    Union,
    /// Intersection over the smaller window (pixel-inclusive areas, the last stage's).
    Min,
}

/// The windows kept by non-maximum suppression, best first.
pub fn nms(windows: &[Window], threshold: f32, how: Overlap) -> Vec<Window> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by(|&a, &b| windows[b].score.total_cmp(&windows[a].score));
    let plus = if how == Overlap::Min { 1.0 } else { 0.0 };
    let area = |w: &Window| (w.x2 - w.x1 + plus).max(0.0) * (w.y2 - w.y1 + plus).max(0.0);
    let mut kept: Vec<Window> = Vec::new();
    for i in order {
        let a = &windows[i];
        let suppressed = kept.iter().any(|b| {
            let iw = (a.x2.min(b.x2) - a.x1.max(b.x1) + plus).max(0.0);
            let ih = (a.y2.min(b.y2) - a.y1.max(b.y1) + plus).max(0.0);
            let inter = iw * ih;
            let o = match how {
                Overlap::Union => inter / (area(a) + area(b) - inter).max(1e-6),
                Overlap::Min => inter / area(a).min(area(b)).max(1e-6),
            };
            o > threshold
        });
        if !suppressed {
            kept.push(*a);
        }
    }
    kept
}

/// An image as planar f32 RGB (`[3][h][w]`, 0–255).
pub struct Planar {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Planar {
    pub fn from_rgb(img: &image::RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * w * h];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * w * h + i] = f32::from(p[c]);
            }
        }
        Self { w, h, data }
    }

    /// PyTorch's "area" resampling (adaptive average pooling) of the region `x0..x1`, `y0..y1`
    /// to `ow`×`oh`, scaled to (v − 127.5) / 128, appended to `out`.
    pub fn area_into(
        &self,
        (x0, y0, x1, y1): (usize, usize, usize, usize),
        ow: usize,
        oh: usize,
        out: &mut Vec<f32>,
    ) {
        let (rw, rh) = (x1 - x0, y1 - y0);
        let span = |i: usize, n: usize, o: usize| (i * n / o, ((i + 1) * n).div_ceil(o));
        for c in 0..3 {
            let plane = &self.data[c * self.w * self.h..(c + 1) * self.w * self.h];
            for oy in 0..oh {
                let (ya, yb) = span(oy, rh, oh);
                for ox in 0..ow {
                    let (xa, xb) = span(ox, rw, ow);
                    let mut sum = 0f32;
                    for y in ya..yb {
                        let row = &plane[(y0 + y) * self.w + x0..];
                        sum += row[xa..xb].iter().sum::<f32>();
                    }
                    let mean = sum / ((yb - ya) * (xb - xa)) as f32;
                    out.push((mean - 127.5) * 0.007_812_5);
                }
            }
        }
    }
}

/// Applies a window's regression: corners move by fractions of its size (`plus_one`: the size
/// counts pixels inclusively, as the later stages do).
pub fn regress(w: &Window, plus_one: bool) -> Window {
    let k = if plus_one { 1.0 } else { 0.0 };
    let (bw, bh) = (w.x2 - w.x1 + k, w.y2 - w.y1 + k);
    Window {
        x1: w.x1 + w.reg[0] * bw,
        y1: w.y1 + w.reg[1] * bh,
        x2: w.x2 + w.reg[2] * bw,
        y2: w.y2 + w.reg[3] * bh,
        score: w.score,
        reg: [0.0; 4],
    }
}

/// The window made square around its centre (its longer side).
pub fn square(w: &Window) -> Window {
    let (bw, bh) = (w.x2 - w.x1, w.y2 - w.y1);
    let l = bw.max(bh);
    let x1 = w.x1 + bw * 0.5 - l * 0.5;
    let y1 = w.y1 + bh * 0.5 - l * 0.5;
    Window {
        x1,
        y1,
        x2: x1 + l,
        y2: y1 + l,
        ..*w
    }
}

/// The pixel region a window crops, clipped to the image: `(x0, y0, x1, y1)` with the ends
/// exclusive, or `None` when nothing is left.
pub fn crop_region(w: &Window, iw: usize, ih: usize) -> Option<(usize, usize, usize, usize)> {
    let x = (w.x1.trunc() as i64).max(1);
    let y = (w.y1.trunc() as i64).max(1);
    let ex = (w.x2.trunc() as i64).min(iw as i64);
    let ey = (w.y2.trunc() as i64).min(ih as i64);
    (ex > x - 1 && ey > y - 1).then(|| ((x - 1) as usize, (y - 1) as usize, ex as usize, ey as usize))
}

/// The three networks, on the CPU.
pub struct Mtcnn {
    pub pnet: PNet,
    pub rnet: RNet,
    pub onet: ONet,
}

impl Mtcnn {
    pub fn new(pnet: VarBuilder, rnet: VarBuilder, onet: VarBuilder) -> Result<Self> {
        Ok(Self {
            pnet: PNet::new(&pnet)?,
            rnet: RNet::new(&rnet)?,
            onet: ONet::new(&onet)?,
        })
    }

    /// Faces in `img` at least `min_face` pixels across: their windows, best first.
    pub fn detect(&self, img: &Planar, min_face: f32) -> Result<Vec<Window>> {
        const FACTOR: f32 = 0.709;
        const THRESHOLDS: [f32; 3] = [0.6, 0.7, 0.7];
        let dev = Device::Cpu;
        let (w, h) = (img.w, img.h);
        // Stage 1: P-Net over the pyramid.
        let mut windows = Vec::new();
        let mut scale = 12.0 / min_face;
        let mut minl = w.min(h) as f32 * scale;
        while minl >= 12.0 {
            let (sw, sh) = (
                (w as f32 * scale + 1.0) as usize,
                (h as f32 * scale + 1.0) as usize,
            );
            let mut data = Vec::with_capacity(3 * sw * sh);
            img.area_into((0, 0, w, h), sw, sh, &mut data);
            let x = Tensor::from_vec(data, (1, 3, sh, sw), &dev)?;
            let (reg, prob) = self.pnet.forward(&x)?;
            let prob = prob.get(0)?.get(1)?.to_vec2::<f32>()?;
            let reg = reg.get(0)?.to_vec3::<f32>()?;
            let mut found = Vec::new();
            for (y, row) in prob.iter().enumerate() {
                for (x, &p) in row.iter().enumerate() {
                    if p < THRESHOLDS[0] {
                        continue;
                    }
                    let (fx, fy) = (x as f32, y as f32);
                    found.push(Window {
                        x1: ((2.0 * fx + 1.0) / scale).floor(),
                        y1: ((2.0 * fy + 1.0) / scale).floor(),
                        x2: ((2.0 * fx + 12.0) / scale).floor(),
                        y2: ((2.0 * fy + 12.0) / scale).floor(),
                        score: p,
                        reg: [reg[0][y][x], reg[1][y][x], reg[2][y][x], reg[3][y][x]],
                    });
                }
            }
            windows.extend(nms(&found, 0.5, Overlap::Union));
            scale *= FACTOR;
            minl *= FACTOR;
        }
        let windows: Vec<Window> = nms(&windows, 0.7, Overlap::Union)
            .iter()
            .map(|w| square(&regress(w, false)))
            .collect();
        // Stage 2: R-Net on 24×24 crops.
        let windows = refine(img, &windows, 24, THRESHOLDS[1], |x| self.rnet.forward(x))?;
        let windows: Vec<Window> = nms(&windows, 0.7, Overlap::Union)
            .iter()
            .map(|w| square(&regress(w, true)))
            .collect();
        // Stage 3: O-Net on 48×48 crops.
        let windows = refine(img, &windows, 48, THRESHOLDS[2], |x| self.onet.forward(x))?;
        let windows: Vec<Window> = windows.iter().map(|w| regress(w, true)).collect();
        Ok(nms(&windows, 0.7, Overlap::Min))
    }
}

/// Crops each window to `side`×`side`, runs `net`, and keeps those scoring above
/// `threshold`, with the network's score and regression.
fn refine(
    img: &Planar,
    windows: &[Window],
    side: usize,
    threshold: f32,
    net: impl Fn(&Tensor) -> Result<(Tensor, Tensor)>,
) -> Result<Vec<Window>> {
    let mut kept = Vec::new();
    let mut data = Vec::new();
    for w in windows {
        if let Some(region) = crop_region(w, img.w, img.h) {
            img.area_into(region, side, side, &mut data);
            kept.push(*w);
        }
    }
    if kept.is_empty() {
        return Ok(kept);
    }
    let x = Tensor::from_vec(data, (kept.len(), 3, side, side), &Device::Cpu)?;
    let (reg, prob) = net(&x)?;
    let (reg, prob) = (reg.to_vec2::<f32>()?, prob.to_vec2::<f32>()?);
    Ok(kept
        .into_iter()
        .enumerate()
        .filter(|(i, _)| prob[*i][1] > threshold)
        .map(|(i, w)| Window {
            score: prob[i][1],
            reg: [reg[i][0], reg[i][1], reg[i][2], reg[i][3]],
            ..w
        })
        .collect())
}
