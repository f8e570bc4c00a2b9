//! int8 weights with activations quantized to u8 as they arrive (dynamic quantization, as
//! OpenVINO and FastSD CPU run their int8 models), for the UNet's linear layers and convolutions
//! on the CPU.
//!
//! Weights are quantized once, symmetrically per output channel (`w ≈ s_w[n]·q`, q in −127..=127),
//! and packed for the kernel. Activations are quantized per call, asymmetrically with an exact
//! zero (`a ≈ s_a·(q − z)`, q in 0..=255): one scale per row for a linear layer (a token), one per
//! image for a convolution (its patches share pixels). The products accumulate exactly in i32,
//! and `y = s_a·s_w·(Σ q_a·q_w − z·Σ q_w) + b`. AVX-512 VNNI's `vpdpbusd` does 64 of these
//! multiply-adds per instruction where f32 FMA does 16; AMX's `tdpbusd` (Intel Sapphire Rapids
//! and later, once Linux grants the tile state) does 16 384 on 16 × 64-byte tiles. The portable
//! tile computes the same integers and every tile shares one epilogue, so the instruction set
//! never changes a result.
//! Without VNNI there is no fast tile (AVX2's `vpmaddubsw` saturates on these operands): the
//! portable tile gives the same results more slowly than f32, which is why [`fast`] exists (the
//! CLI and the server warn where it is false).

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output channels per vector.
const LANES: usize = 16;
/// Vectors of output channels per tile: a tile is 48 channels wide.
const VECS: usize = 3;
/// Output channels per packed block (all but the last are this wide).
const BLOCK: usize = LANES * VECS;
/// Rows (tokens or pixels) of the AVX-512 and portable tiles.
const ROWS: usize = 8;
/// Rows of the AMX tile; quantized activations are padded to a multiple of it (and of `ROWS`).
const TILE_ROWS: usize = 16;
/// Inner-dimension elements per `vpdpbusd` lane.
const GROUP: usize = 4;
/// The inner dimension is padded (with zero weights) to a multiple of this: one AMX tile row
/// of bytes.
const K_ALIGN: usize = 64;
/// Bytes of quantized activations one work item reads (a few hundred KiB stay in L2).
const CHUNK_BYTES: usize = 256 << 10;

/// Layers that can swap their f32 weights for int8 ones, and the models built of them.
pub trait Quantize {
    /// Quantizes in place; layers that cannot (other devices, grouped convolutions) stay f32.
    fn quantize_int8(&mut self) -> candle_core::Result<()>;
}

impl<T: Quantize> Quantize for Option<T> {
    fn quantize_int8(&mut self) -> candle_core::Result<()> {
        self.as_mut().map_or(Ok(()), T::quantize_int8)
    }
}

impl<T: Quantize> Quantize for Vec<T> {
    fn quantize_int8(&mut self) -> candle_core::Result<()> {
        self.iter_mut().try_for_each(T::quantize_int8)
    }
}

/// Whether this CPU has a fast int8 tile (AMX, else AVX-512 VNNI). Detected once.
pub fn fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    return matches!(Isa::best(), Isa::Amx | Isa::Vnni);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A weight `[n, k]` quantized per output channel and packed for the tile.
#[derive(Debug)]
pub struct QWeight {
    n: usize,
    k: usize,
    /// `k` rounded up to [`K_ALIGN`].
    kp: usize,
    /// Blocks of [`BLOCK`] channels (the last one `ceil(rest / LANES)` vectors wide), each laid
    /// out `[kp / GROUP][width][GROUP]`; channels past `n` have zero weights.
    data: Vec<i8>,
    scale: Vec<f32>,
    /// `Σ_k q[n, k]`, for the activations' zero point.
    wsum: Vec<i32>,
    bias: Vec<f32>,
}

impl QWeight {
    /// Quantizes a row-major `[n, k]` weight and its bias (zeros when `None`).
    pub fn new(w: &[f32], (n, k): (usize, usize), bias: Option<&[f32]>) -> Self {
        assert_eq!(w.len(), n * k, "weight is not {n}×{k}");
        let kp = k.next_multiple_of(K_ALIGN);
        let padded = n.next_multiple_of(LANES);
        let mut q = vec![0i8; padded * kp];
        let mut scale = vec![0f32; n];
        let mut wsum = vec![0i32; n];
        for (c, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 && max.is_finite() {
                max / 127.0
            } else {
                1.0
            };
            let inv = 1.0 / s;
            let dst = &mut q[c * kp..c * kp + k];
            for (d, v) in dst.iter_mut().zip(row) {
                *d = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
            scale[c] = s;
            wsum[c] = dst.iter().map(|&v| v as i32).sum();
        }
        // Pack: block-major, then group, then channel, then the group's 4 values.
        let mut data = vec![0i8; padded * kp];
        let mut at = 0;
        for c0 in (0..padded).step_by(BLOCK) {
            let width = BLOCK.min(padded - c0);
            for g in 0..kp / GROUP {
                for c in c0..c0 + width {
                    data[at..at + GROUP].copy_from_slice(&q[c * kp + g * GROUP..c * kp + (g + 1) * GROUP]);
                    at += GROUP;
                }
            }
        }
        let bias = bias.map_or_else(|| vec![0.0; n], <[f32]>::to_vec);
        assert_eq!(bias.len(), n, "bias is not {n} long");
        Self {
            n,
            k,
            kp,
            data,
            scale,
            wsum,
            bias,
        }
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held (packed weights and per-channel terms).
    pub fn bytes(&self) -> usize {
        self.data.len() + 12 * self.n
    }

    /// The weight as the kernel sees it, row-major `[n, k]`: what tests compare against.
    pub fn dequantized(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (c, row) in out.chunks_exact_mut(self.k.max(1)).enumerate().take(self.n) {
            let (b, j) = (c / BLOCK, c % BLOCK);
            let width = BLOCK.min(self.n.next_multiple_of(LANES) - b * BLOCK);
            let base = b * BLOCK * self.kp;
            for (i, v) in row.iter_mut().enumerate() {
                let (g, t) = (i / GROUP, i % GROUP);
                *v = self.data[base + (g * width + j) * GROUP + t] as f32 * self.scale[c];
            }
        }
        out
    }

    fn blocks(&self) -> usize {
        self.n.div_ceil(BLOCK)
    }
}

/// Activations of a product, quantized a chunk of rows at a time as the product reaches them
/// (the chunk stays in cache between quantizing and multiplying).
pub trait Source: Sync {
    /// Rows: tokens, or a convolution's output pixels.
    fn rows(&self) -> usize;
    /// The inner dimension.
    fn k(&self) -> usize;
    /// Quantizes `rows` into `q` (sized by [`Chunk::reset`]).
    fn fill(&self, rows: std::ops::Range<usize>, q: &mut Chunk);

    /// All rows as the kernel sees them, row-major `[rows, k]`: what tests compare against.
    fn dequantized(&self) -> Vec<f32> {
        let (rows, k) = (self.rows(), self.k());
        let mut q = Chunk::default();
        q.reset(rows, k.next_multiple_of(K_ALIGN));
        self.fill(0..rows, &mut q);
        let mut out = vec![0f32; rows * k];
        for (r, row) in out.chunks_exact_mut(k.max(1)).enumerate().take(rows) {
            for (o, &v) in row.iter_mut().zip(&q.data[r * q.kp..]) {
                *o = (v as i32 - q.zero[r]) as f32 * q.scale[r];
            }
        }
        out
    }
}

/// One work item's activations: rows (padded to whole tiles) of `kp` bytes, with each row's
/// scale and zero point. Reused from item to item on a thread.
#[derive(Default)]
pub struct Chunk {
    kp: usize,
    data: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

impl Chunk {
    /// Room for `rows` rows of `kp` bytes. Bytes past a row's `k` and rows past `rows` keep
    /// whatever they held: they meet zero weights or are never written out.
    fn reset(&mut self, rows: usize, kp: usize) {
        let padded = rows.next_multiple_of(TILE_ROWS);
        self.kp = kp;
        self.data.resize(padded * kp, 0);
        self.scale.resize(padded, 1.0);
        self.zero.resize(padded, 0);
    }
}

/// A linear layer's input: row-major `[rows, k]`, one scale per row (per token).
pub struct PerRow<'a> {
    pub x: &'a [f32],
    pub k: usize,
}

impl Source for PerRow<'_> {
    fn rows(&self) -> usize {
        self.x.len() / self.k.max(1)
    }

    fn k(&self) -> usize {
        self.k
    }

    fn fill(&self, rows: std::ops::Range<usize>, q: &mut Chunk) {
        let (k, kp) = (self.k, q.kp);
        for (i, r) in rows.enumerate() {
            let src = &self.x[r * k..(r + 1) * k];
            let (lo, hi) = min_max(src);
            let p = range_params(lo, hi);
            quantize_into(&mut q.data[i * kp..i * kp + k], src, p);
            (q.scale[i], q.zero[i]) = p;
        }
    }
}

/// A convolution's input over one image, quantized once with one scale (its patches share
/// pixels) and kept as `[h + 2·pad, w + 2·pad, cin]` bytes, the border the zero point; a row is
/// one output pixel's patch in `[ky, kx, cin]` order (see [`conv_weight`]).
pub struct Patches {
    hwc: Vec<u8>,
    cin: usize,
    padded_w: usize,
    out_w: usize,
    rows: usize,
    shape: ConvShape,
    params: (f32, i32),
}

impl Patches {
    /// Quantizes one `[cin, h, w]` image.
    pub fn new(x: &[f32], cin: usize, (h, w): (usize, usize), shape: ConvShape) -> Self {
        let (oh, ow) = shape.output((h, w));
        let (lo, hi) = x
            .par_chunks(1 << 14)
            .map(min_max)
            .reduce(|| (0.0, 0.0), |a, b| (a.0.min(b.0), a.1.max(b.1)));
        let params = range_params(lo, hi);
        let pad = shape.pad;
        let pw = w + 2 * pad;
        let mut hwc = vec![params.1 as u8; (h + 2 * pad) * pw * cin];
        hwc.par_chunks_mut(pw * cin)
            .skip(pad)
            .take(h)
            .enumerate()
            .for_each(|(y, row)| hwc_row(&mut row[pad * cin..(pad + w) * cin], x, (cin, h, w), y, params));
        Self {
            hwc,
            cin,
            padded_w: pw,
            out_w: ow,
            rows: oh * ow,
            shape,
            params,
        }
    }
}

impl Source for Patches {
    fn rows(&self) -> usize {
        self.rows
    }

    fn k(&self) -> usize {
        self.shape.kh * self.shape.kw * self.cin
    }

    fn fill(&self, rows: std::ops::Range<usize>, q: &mut Chunk) {
        let ConvShape { kh, kw, stride, .. } = self.shape;
        let span = kw * self.cin;
        for (i, pix) in rows.enumerate() {
            let (oy, ox) = (pix / self.out_w, pix % self.out_w);
            let dst = &mut q.data[i * q.kp..];
            for ky in 0..kh {
                let at = ((oy * stride + ky) * self.padded_w + ox * stride) * self.cin;
                dst[ky * span..(ky + 1) * span].copy_from_slice(&self.hwc[at..at + span]);
            }
            (q.scale[i], q.zero[i]) = self.params;
        }
    }
}

/// The scale and zero point that map `[lo, hi]` (widened to hold 0) onto 0..=255.
fn range_params(lo: f32, hi: f32) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let s = if hi > lo && (hi - lo).is_finite() {
        (hi - lo) / 255.0
    } else {
        1.0
    };
    (s, (-lo / s).round_ties_even().clamp(0.0, 255.0) as i32)
}

#[inline(always)]
fn quantize_portable(dst: &mut [u8], src: &[f32], (s, z): (f32, i32)) {
    let (inv, z) = (1.0 / s, z as f32);
    for (d, v) in dst.iter_mut().zip(src) {
        *d = ((v * inv).round_ties_even() + z).clamp(0.0, 255.0) as u8;
    }
}

#[inline(always)]
fn min_max_portable(v: &[f32]) -> (f32, f32) {
    v.iter().fold((0f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// `dst = quantized(src)`; compiled for AVX-512 where the fast tile runs (the baseline build
/// rounds through a libm call per value), the same results either way.
fn quantize_into(dst: &mut [u8], src: &[f32], params: (f32, i32)) {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: `fast` means this CPU has AVX-512.
        return unsafe { x86::quantize(dst, src, params) };
    }
    quantize_portable(dst, src, params)
}

/// The smallest and largest value of `v`, widened to hold 0.
fn min_max(v: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: as above.
        return unsafe { x86::min_max(v) };
    }
    min_max_portable(v)
}

/// Row `y` of a `[cin, h, w]` image, quantized, as `[w, cin]` bytes.
fn hwc_row(dst: &mut [u8], x: &[f32], (cin, h, w): (usize, usize, usize), y: usize, params: (f32, i32)) {
    let mut plane = vec![0u8; w];
    for c in 0..cin {
        quantize_into(&mut plane, &x[(c * h + y) * w..(c * h + y + 1) * w], params);
        for (px, &v) in plane.iter().enumerate() {
            dst[px * cin + c] = v;
        }
    }
}

/// The geometry of a convolution's kernel.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    /// Output height and width for an `h × w` input.
    pub fn output(&self, (h, w): (usize, usize)) -> (usize, usize) {
        (
            (h + 2 * self.pad - self.kh) / self.stride + 1,
            (w + 2 * self.pad - self.kw) / self.stride + 1,
        )
    }
}

/// A convolution weight `[cout, cin, kh, kw]` reordered to `[cout, kh, kw, cin]`, the patch
/// order of [`QRows::patches`].
pub fn conv_weight(w: &[f32], (cout, cin, kh, kw): (usize, usize, usize, usize)) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..kh * kw {
                out[(co * kh * kw + t) * cin + ci] = w[(co * cin + ci) * kh * kw + t];
            }
        }
    }
    out
}

/// Where the product goes: element (row, channel) at `row · row_stride + channel ·
/// channel_stride` (a linear layer writes rows, a convolution channel planes).
#[derive(Clone, Copy)]
pub struct Out {
    pub row_stride: usize,
    pub channel_stride: usize,
}

/// `out = a · wᵀ + bias` on int8 weights and activations quantized as they go, on every rayon
/// thread. `out` holds `a.rows()` rows of `w.n()` channels at the strides given; every one of
/// those elements is written (so `out` may start uninitialised, as a fresh `Vec`'s spare
/// capacity), no other.
pub fn product(a: &impl Source, w: &QWeight, out: &mut [MaybeUninit<f32>], at: Out) {
    product_with(a, w, out, at, Isa::best())
}

/// [`product`] into a new `Vec` of `len` floats that the rows × channels at `at` fill exactly.
pub fn product_vec(a: &impl Source, w: &QWeight, len: usize, at: Out) -> Vec<f32> {
    assert_eq!(len, a.rows() * w.n, "the output is not exactly rows × channels");
    let mut out = Vec::with_capacity(len);
    product(a, w, &mut out.spare_capacity_mut()[..len], at);
    // SAFETY: `product` wrote all `len` elements: rows × channels at distinct positions
    // (checked against `len` above and in `product_with`).
    unsafe { out.set_len(len) };
    out
}

fn product_with(a: &impl Source, w: &QWeight, out: &mut [MaybeUninit<f32>], at: Out, isa: Isa) {
    assert_eq!(
        a.k(),
        w.k,
        "activations and weight disagree on the inner dimension"
    );
    let rows = a.rows();
    if rows == 0 || w.n == 0 {
        return;
    }
    let last = (rows - 1) * at.row_stride + (w.n - 1) * at.channel_stride;
    assert!(last < out.len(), "output too small");
    let tiles = rows.div_ceil(TILE_ROWS);
    let per_chunk = (CHUNK_BYTES / w.kp.max(1) / TILE_ROWS).clamp(1, 8);
    let chunks = tiles.div_ceil(per_chunk);
    // Few row chunks (small images, many channels): split the channels too.
    let threads = rayon::current_num_threads().max(1);
    let splits = (2 * threads).div_ceil(chunks).clamp(1, w.blocks());
    let per_split = w.blocks().div_ceil(splits);
    let dst = OutPtr(out.as_mut_ptr().cast::<f32>());
    (0..chunks * splits)
        .into_par_iter()
        .for_each_init(Chunk::default, |q, item| {
            let (c, s) = (item / splits, item % splits);
            let first = c * per_chunk * TILE_ROWS;
            let job = Job {
                first,
                rows: (rows - first).min(per_chunk * TILE_ROWS),
                blocks: s * per_split..w.blocks().min((s + 1) * per_split),
            };
            q.reset(job.rows, w.kp);
            a.fill(first..first + job.rows, q);
            // SAFETY: each job writes the outputs of its own rows × channels only, inside `out`
            // (checked above), and the jobs are joined before `out` is used again.
            unsafe { run(isa, q, w, &dst, at, job) };
        });
}

/// One work item: `rows` rows from `first` (quantized into a [`Chunk`]) × blocks of channels.
struct Job {
    first: usize,
    rows: usize,
    blocks: std::ops::Range<usize>,
}

struct OutPtr(*mut f32);
// SAFETY: jobs write disjoint elements (see `product_with`).
unsafe impl Sync for OutPtr {}

/// # Safety
/// The job's outputs must be inside the buffer behind `dst` and written by no one else.
unsafe fn run(isa: Isa, q: &Chunk, w: &QWeight, dst: &OutPtr, at: Out, job: Job) {
    // SAFETY: forwarded; the VNNI variant is only chosen where the CPU has it.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => run_amx(q, w, dst, at, job),
            #[cfg(target_arch = "x86_64")]
            Isa::Vnni => run_vnni(q, w, dst, at, job),
            Isa::Plain => run_with::<Plain>(q, w, dst, at, job),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
unsafe fn run_vnni(q: &Chunk, w: &QWeight, dst: &OutPtr, at: Out, job: Job) {
    // SAFETY: forwarded; compiled for the features the tile uses.
    unsafe { run_with::<x86::Vnni>(q, w, dst, at, job) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,fma")]
unsafe fn run_amx(q: &Chunk, w: &QWeight, dst: &OutPtr, at: Out, job: Job) {
    // SAFETY: forwarded; AMX is only chosen where the CPU has it and the kernel granted the
    // tile state to this process (`x86::amx_ready`); the tiles are configured for this thread
    // here and released after.
    unsafe {
        x86::Amx::configure();
        run_with::<x86::Amx>(q, w, dst, at, job);
        x86::Amx::release();
    }
}

/// A tile: `acc[r · BLOCK + j] = Σ_g a[r][g] · w[g][j]` over `groups` groups of 4 for
/// [`Tile::ROWS`] rows and `V` vectors of channels.
trait Tile {
    /// Rows per tile.
    const ROWS: usize;
    /// # Safety
    /// `a` holds [`Tile::ROWS`] rows of `groups · 4` bytes, `lda` apart; `w` holds
    /// `groups · V · 64`; `groups` is a multiple of 16.
    unsafe fn tile<const V: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        groups: usize,
        acc: &mut [i32; TILE_ROWS * BLOCK],
    );
}

#[inline(always)]
unsafe fn run_with<T: Tile>(a: &Chunk, w: &QWeight, dst: &OutPtr, at: Out, job: Job) {
    let mut acc = [0i32; TILE_ROWS * BLOCK];
    let groups = a.kp / GROUP;
    for b in job.blocks {
        let c0 = b * BLOCK;
        let vecs = (w.n.next_multiple_of(LANES) - c0).min(BLOCK) / LANES;
        // SAFETY: block `b` starts after `b` full blocks of BLOCK · kp bytes.
        let wp = unsafe { w.data.as_ptr().add(c0 * a.kp) };
        for r0 in (0..job.rows).step_by(T::ROWS) {
            // SAFETY: rows are padded to whole tiles; the block holds `groups · vecs · 64` bytes.
            unsafe {
                let ap = a.data.as_ptr().add(r0 * a.kp);
                match vecs {
                    3 => T::tile::<3>(ap, a.kp, wp, groups, &mut acc),
                    2 => T::tile::<2>(ap, a.kp, wp, groups, &mut acc),
                    _ => T::tile::<1>(ap, a.kp, wp, groups, &mut acc),
                }
            }
            let (width, rows) = ((w.n - c0).min(BLOCK), T::ROWS.min(job.rows - r0));
            let (wsum, scale, bias) = (
                &w.wsum[c0..c0 + width],
                &w.scale[c0..c0 + width],
                &w.bias[c0..c0 + width],
            );
            let mut y = [0f32; TILE_ROWS * BLOCK];
            for r in 0..rows {
                let (sa, z) = (a.scale[r0 + r], a.zero[r0 + r]);
                let (acc, y) = (
                    &acc[r * BLOCK..r * BLOCK + width],
                    &mut y[r * BLOCK..r * BLOCK + width],
                );
                for ((((y, &acc), &ws), &s), &b) in y.iter_mut().zip(acc).zip(wsum).zip(scale).zip(bias) {
                    *y = ((acc - z * ws) as f32).mul_add(sa * s, b);
                }
            }
            // SAFETY (both arms): the job's (row, channel) elements, inside the buffer.
            let r0 = job.first + r0;
            if at.channel_stride == 1 {
                for r in 0..rows {
                    let o = unsafe { dst.0.add((r0 + r) * at.row_stride + c0) };
                    unsafe { std::ptr::copy_nonoverlapping(y[r * BLOCK..].as_ptr(), o, width) };
                }
            } else {
                for j in 0..width {
                    let o = unsafe { dst.0.add(r0 * at.row_stride + (c0 + j) * at.channel_stride) };
                    for r in 0..rows {
                        unsafe { *o.add(r * at.row_stride) = y[r * BLOCK + j] };
                    }
                }
            }
        }
    }
}

/// Portable: the same integers, slowly.
struct Plain;

impl Tile for Plain {
    const ROWS: usize = ROWS;
    #[inline(always)]
    unsafe fn tile<const V: usize>(
        a: *const u8,
        lda: usize,
        w: *const i8,
        groups: usize,
        acc: &mut [i32; TILE_ROWS * BLOCK],
    ) {
        let width = V * LANES;
        // SAFETY: within the extents the caller guarantees.
        let (a, w) = unsafe {
            (
                std::slice::from_raw_parts(a, (ROWS - 1) * lda + groups * GROUP),
                std::slice::from_raw_parts(w, groups * width * GROUP),
            )
        };
        for r in 0..ROWS {
            let out = &mut acc[r * BLOCK..r * BLOCK + width];
            out.fill(0);
            for g in 0..groups {
                let av = &a[r * lda + g * GROUP..r * lda + (g + 1) * GROUP];
                let wg = &w[g * width * GROUP..(g + 1) * width * GROUP];
                for (o, wv) in out.iter_mut().zip(wg.chunks_exact(GROUP)) {
                    *o += av.iter().zip(wv).map(|(&x, &y)| x as i32 * y as i32).sum::<i32>();
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, BLOCK, GROUP, K_ALIGN, LANES, ROWS, TILE_ROWS};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// [`super::quantize_portable`], 16 values at a time: the same operations in the same
    /// order (a NaN becomes 0 in both: `max` returns its second operand for one).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn quantize(dst: &mut [u8], src: &[f32], (s, z): (f32, i32)) {
        let n = dst.len().min(src.len());
        let (inv, zf) = (_mm512_set1_ps(1.0 / s), _mm512_set1_ps(z as f32));
        let (zero, top) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
        let mut i = 0;
        // SAFETY: i + 16 ≤ n for every access.
        unsafe {
            while i + 16 <= n {
                let v = _mm512_mul_ps(_mm512_loadu_ps(src.as_ptr().add(i)), inv);
                let v = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                let v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zf), zero), top);
                let b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), b);
                i += 16;
            }
        }
        super::quantize_portable(&mut dst[i..n], &src[i..n], (s, z))
    }

    /// [`super::min_max_portable`], 16 lanes at a time (NaNs skipped as there).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn min_max(v: &[f32]) -> (f32, f32) {
        let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut chunks = v.chunks_exact(16);
        for c in &mut chunks {
            // SAFETY: 16 floats. A NaN in `x` yields the second operand, the running value.
            unsafe {
                let x = _mm512_loadu_ps(c.as_ptr());
                lo = _mm512_min_ps(x, lo);
                hi = _mm512_max_ps(x, hi);
            }
        }
        let (l, h) = super::min_max_portable(chunks.remainder());
        (_mm512_reduce_min_ps(lo).min(l), _mm512_reduce_max_ps(hi).max(h))
    }

    /// Whether this CPU has AMX-INT8 and the kernel gave this process the tile state (Linux
    /// asks for it: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`). Asked once.
    pub fn amx_ready() -> bool {
        static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *READY.get_or_init(|| {
            // CPUID.(EAX=7, ECX=0):EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
            let edx = __cpuid_count(7, 0).edx;
            if edx & (3 << 24) != 3 << 24 {
                return false;
            }
            #[cfg(target_os = "linux")]
            {
                const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
                const XFEATURE_XTILEDATA: libc::c_long = 18;
                // SAFETY: a request for permission; it changes nothing else in the process.
                unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
            }
            #[cfg(not(target_os = "linux"))]
            false
        })
    }

    /// AMX: 16 rows × up to 48 channels, one `tdpbusd` per 16 × 64 bytes of activations and 64
    /// × 16 of weights (16 384 multiply-adds). The weights' packing is already AMX's B layout:
    /// one row of bytes per group of 4, 4 bytes per channel. Tiles: tmm0–2 accumulate, tmm3
    /// holds activations, tmm4–6 weights; every tile is 16 rows × 64 bytes. (Inline assembly:
    /// Rust's AMX intrinsics are not stable.)
    pub struct Amx;

    impl Amx {
        /// Loads the tile configuration for this thread.
        ///
        /// # Safety
        /// Only where [`amx_ready`] is true.
        #[inline(always)]
        pub unsafe fn configure() {
            let mut cfg = [0u8; 64];
            cfg[0] = 1; // palette 1
            for t in 0..7 {
                cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&(K_ALIGN as u16).to_le_bytes());
                cfg[48 + t] = TILE_ROWS as u8;
            }
            // SAFETY: a valid palette-1 configuration, 64 bytes.
            unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack)) };
        }

        /// Releases the tiles (their state is large; the kernel saves it on every switch).
        ///
        /// # Safety
        /// After [`Amx::configure`] on this thread.
        #[inline(always)]
        pub unsafe fn release() {
            // SAFETY: see above.
            unsafe { asm!("tilerelease", options(nostack)) };
        }
    }

    impl Tile for Amx {
        const ROWS: usize = TILE_ROWS;
        #[inline(always)]
        unsafe fn tile<const V: usize>(
            a: *const u8,
            lda: usize,
            w: *const i8,
            groups: usize,
            acc: &mut [i32; TILE_ROWS * BLOCK],
        ) {
            let wrow = V * LANES * GROUP;
            // SAFETY (whole body): the tiles are configured (`run_amx`); every load reads 16
            // rows of 64 bytes inside the extents the caller guarantees (`groups` is a multiple
            // of 16, so each step takes 64 bytes of each activation row and 16 weight rows);
            // the stores write 16 rows of 16 i32 inside `acc`.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    options(nostack)
                );
                for s in 0..groups / 16 {
                    let (ap, wp) = (a.add(s * K_ALIGN), w.add(s * 16 * wrow));
                    asm!("tileloadd tmm3, [{p} + {s}*1]", p = in(reg) ap, s = in(reg) lda,
                        options(nostack, readonly));
                    asm!("tileloadd tmm4, [{p} + {s}*1]", "tdpbusd tmm0, tmm3, tmm4",
                        p = in(reg) wp, s = in(reg) wrow, options(nostack, readonly));
                    if V > 1 {
                        asm!("tileloadd tmm5, [{p} + {s}*1]", "tdpbusd tmm1, tmm3, tmm5",
                            p = in(reg) wp.add(64), s = in(reg) wrow, options(nostack, readonly));
                    }
                    if V > 2 {
                        asm!("tileloadd tmm6, [{p} + {s}*1]", "tdpbusd tmm2, tmm3, tmm6",
                            p = in(reg) wp.add(128), s = in(reg) wrow, options(nostack, readonly));
                    }
                }
                let (out, stride) = (acc.as_mut_ptr(), BLOCK * 4);
                asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) out, s = in(reg) stride, options(nostack));
                if V > 1 {
                    asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) out.add(16), s = in(reg) stride,
                        options(nostack));
                }
                if V > 2 {
                    asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) out.add(32), s = in(reg) stride,
                        options(nostack));
                }
            }
        }
    }

    /// AVX-512 VNNI: 8 rows × up to 48 channels, 24 of the 32 zmm registers accumulating.
    pub struct Vnni;

    impl Tile for Vnni {
        const ROWS: usize = ROWS;
        #[inline(always)]
        unsafe fn tile<const V: usize>(
            a: *const u8,
            lda: usize,
            w: *const i8,
            groups: usize,
            acc: &mut [i32; TILE_ROWS * BLOCK],
        ) {
            // SAFETY (whole body): only reached from `run_vnni`, compiled for AVX-512 VNNI; the
            // reads stay within the extents the caller guarantees.
            unsafe {
                let mut sum = [[_mm512_setzero_si512(); V]; ROWS];
                for g in 0..groups {
                    let wp = w.add(g * V * LANES * GROUP);
                    let mut wv = [_mm512_setzero_si512(); V];
                    for (j, wv) in wv.iter_mut().enumerate() {
                        *wv = _mm512_loadu_si512(wp.add(j * LANES * GROUP).cast());
                    }
                    for (r, sum) in sum.iter_mut().enumerate() {
                        let av = _mm512_set1_epi32(a.add(r * lda + g * GROUP).cast::<i32>().read_unaligned());
                        for (s, wv) in sum.iter_mut().zip(&wv) {
                            *s = _mm512_dpbusd_epi32(*s, av, *wv);
                        }
                    }
                }
                for (r, sum) in sum.iter().enumerate() {
                    for (j, s) in sum.iter().enumerate() {
                        _mm512_storeu_si512(acc.as_mut_ptr().add(r * BLOCK + j * LANES).cast(), *s);
                    }
                }
            }
        }
    }
}

/// The instruction sets with a tile.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Amx,
    #[cfg(target_arch = "x86_64")]
    Vnni,
    Plain,
}

impl Isa {
    fn available() -> Vec<Isa> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") && has!("fma") {
                if x86::amx_ready() {
                    all.push(Isa::Amx);
                }
                all.push(Isa::Vnni);
            }
        }
        all.push(Isa::Plain);
        all
    }

    fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in about ±2, a few of them large (outliers widen a row's range as
    /// real activations do).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0;
                if i % 97 == 5 {
                    u * 8.0
                } else {
                    u
                }
            })
            .collect()
    }

    fn run_with(a: &impl Source, w: &QWeight, at: Out, isa: Isa) -> Vec<f32> {
        let mut y = vec![MaybeUninit::new(f32::NAN); a.rows() * w.n()];
        product_with(a, w, &mut y, at, isa);
        // SAFETY: initialised above (NaN where the product did not write).
        y.into_iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    fn run_linear(x: &[f32], w: &QWeight, isa: Isa) -> Vec<f32> {
        let at = Out {
            row_stride: w.n(),
            channel_stride: 1,
        };
        run_with(&PerRow { x, k: w.k() }, w, at, isa)
    }

    /// What the kernel computes is the product of what it sees: the dequantized activations
    /// and weights, to float rounding (checked in f64, odd shapes, every instruction set).
    #[test]
    fn matches_the_dequantized_product() {
        for (rows, k, n) in [
            (1, 1, 1),
            (7, 5, 17),
            (9, 33, 49),
            (13, 64, 96),
            (77, 320, 97),
            (130, 64, 320),
            (8, 4, 16),
        ] {
            let (x, w, b) = (values(rows * k, 1), values(n * k, 2), values(n, 3));
            let qw = QWeight::new(&w, (n, k), Some(&b));
            let (xd, wd) = (PerRow { x: &x, k }.dequantized(), qw.dequantized());
            for isa in Isa::available() {
                let y = run_linear(&x, &qw, isa);
                for r in 0..rows {
                    for c in 0..n {
                        let (xr, wr) = (&xd[r * k..(r + 1) * k], &wd[c * k..(c + 1) * k]);
                        let dot: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let mag: f64 = xr
                            .iter()
                            .zip(wr)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let (got, want) = (y[r * n + c] as f64, dot + b[c] as f64);
                        assert!(
                            (got - want).abs() <= 1e-5 * (mag + b[c].abs() as f64) + 1e-6,
                            "{rows}×{k}·{n}ᵀ ({isa:?}) at ({r}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Within a stated tolerance of the f32 product, in relative L2 error: under 2 % on evenly
    /// spread values (measured ~0.7 % on Gaussian activations, `examples/int8_profile.rs`),
    /// under 4 % when every row has 8× outliers (they widen its range: measured 2.5 %).
    #[test]
    fn close_to_the_f32_product() {
        let (rows, k, n) = (64, 320, 80);
        let w = values(n * k, 5);
        let qw = QWeight::new(&w, (n, k), None);
        let even: Vec<f32> = values(rows * k, 4).iter().map(|v| v.clamp(-2.0, 2.0)).collect();
        for (x, bound) in [(even, 0.02), (values(rows * k, 4), 0.04)] {
            let y = run_linear(&x, &qw, Isa::best());
            let (mut err, mut norm) = (0f64, 0f64);
            for r in 0..rows {
                for c in 0..n {
                    let exact: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[c * k + i] as f64).sum();
                    err += (y[r * n + c] as f64 - exact).powi(2);
                    norm += exact.powi(2);
                }
            }
            let rel = (err / norm).sqrt();
            assert!(rel < bound, "relative error {rel}, bound {bound}");
        }
    }

    /// The instruction sets give the same bits: the integers are exact and the epilogue is
    /// shared (linear layers, and convolutions whose rows end in padding bytes).
    #[test]
    fn every_instruction_set_agrees() {
        let (x, w) = (values(37 * 70, 6), values(50 * 70, 7));
        let qw = QWeight::new(&w, (50, 70), None);
        let all: Vec<Vec<f32>> = Isa::available()
            .into_iter()
            .map(|isa| run_linear(&x, &qw, isa))
            .collect();
        assert!(all
            .windows(2)
            .all(|p| p[0].iter().zip(&p[1]).all(|(a, b)| a.to_bits() == b.to_bits())));

        let (cin, cout, h, wd) = (3, 20, 11, 9);
        let shape = ConvShape {
            kh: 3,
            kw: 3,
            stride: 2,
            pad: 1,
        };
        let img = values(cin * h * wd, 8);
        let kernel = conv_weight(&values(cout * cin * 9, 9), (cout, cin, 3, 3));
        let qw = QWeight::new(&kernel, (cout, cin * 9), None);
        let a = Patches::new(&img, cin, (h, wd), shape);
        let (oh, ow) = shape.output((h, wd));
        let all: Vec<Vec<f32>> = Isa::available()
            .into_iter()
            .map(|isa| {
                let at = Out {
                    row_stride: 1,
                    channel_stride: oh * ow,
                };
                run_with(&a, &qw, at, isa)
            })
            .collect();
        assert!(all[0].iter().all(|v| v.is_finite()), "every output written");
        assert!(all
            .windows(2)
            .all(|p| p[0].iter().zip(&p[1]).all(|(a, b)| a.to_bits() == b.to_bits())));
    }

    /// Zero is exact: an all-zero input gives exactly the bias, and so does a zero weight.
    #[test]
    fn zero_stays_zero() {
        let (rows, k, n) = (9, 12, 20);
        let b = values(n, 10);
        let w = QWeight::new(&values(n * k, 11), (n, k), Some(&b));
        let y = run_linear(&vec![0.0; rows * k], &w, Isa::best());
        assert!(y.chunks_exact(n).all(|row| row == b.as_slice()));
        let zero = QWeight::new(&vec![0.0; n * k], (n, k), Some(&b));
        let y = run_linear(&values(rows * k, 12), &zero, Isa::best());
        assert!(y.chunks_exact(n).all(|row| row == b.as_slice()));
    }

    /// The fast-path quantizer and range give what the portable ones give, NaN and infinities
    /// included (a NaN becomes 0, the bottom of the range; an infinity saturates).
    #[test]
    fn quantizers_agree() {
        let mut v = values(1000, 13);
        v[3] = f32::NAN;
        v[500] = f32::INFINITY;
        v[501] = f32::NEG_INFINITY;
        let p = range_params(-2.0, 3.0);
        let (mut fast_q, mut portable_q) = (vec![0u8; v.len()], vec![0u8; v.len()]);
        quantize_into(&mut fast_q, &v, p);
        quantize_portable(&mut portable_q, &v, p);
        assert_eq!(fast_q, portable_q);
        assert_eq!((fast_q[3], fast_q[500], fast_q[501]), (0, 255, 0));
        let finite: Vec<f32> = v.iter().copied().filter(|x| x.is_finite()).collect();
        assert_eq!(min_max(&finite), min_max_portable(&finite));
    }
}
