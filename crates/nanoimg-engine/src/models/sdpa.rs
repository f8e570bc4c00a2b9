//! Fused scaled dot-product attention for the CPU: `softmax(q·kᵀ·scale)·v` without ever
//! writing the score matrix to memory.
//!
//! Each task takes one head and a tile of [`TILE_ROWS`] queries: it computes that tile's scores
//! against every key into a buffer that stays in the core's L2 cache, takes the softmax of each
//! row in place, and multiplies by `v` straight into the output. There is no barrier between the
//! three stages and no per-call packing: the keys are transposed and the values padded once per
//! head, and both products run on one register-tile micro-kernel (`R` rows × `W` columns of
//! accumulators, `R`·`W` sized to the vector registers of the CPU it runs on: AVX-512, AVX2 + FMA,
//! or plain code for anything else).
//!
//! The kernel reads q/k/v with explicit strides, so it serves both `[batch, heads, tokens, dim]`
//! tensors and `[batch, tokens, heads·dim]` projections (the UNet's, without splitting the heads
//! into a copy first), and writes its output in the same layout as q.

use super::kernels::softmax_in_place;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Queries per task: their scores (`TILE_ROWS` × keys f32, 0.8 MiB at 4096 keys) stay in L2.
/// 48 measured a little faster than 24 and 12 at SD 1.5's and SD 2's 4096-token self-attention,
/// and is a multiple of every kernel's rows.
const TILE_ROWS: usize = 48;
/// Keys are padded to a multiple of this (the widest `W`); padded scores are computed and ignored.
const KEY_ALIGN: usize = 32;
/// Head dims are padded to a multiple of this (the narrowest `W`) in the values' copy.
const DIM_ALIGN: usize = 16;

/// Where the tensors' elements are: `[batch, heads, tokens]` strides, the head dim contiguous.
#[derive(Debug, Clone, Copy)]
struct Strides {
    batch: usize,
    head: usize,
    token: usize,
}

/// The layout of q, k, v and the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadLayout {
    /// `[batch, heads, tokens, dim]`.
    HeadsFirst,
    /// `[batch, tokens, heads·dim]`, with the number of heads.
    HeadsLast(usize),
}

struct Sdpa {
    layout: HeadLayout,
    scale: f32,
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    queries: usize,
    keys: usize,
    dim: usize,
}

impl Dims {
    fn strides(&self, tokens: usize, layout: HeadLayout) -> Strides {
        match layout {
            HeadLayout::HeadsFirst => Strides {
                batch: self.heads * tokens * self.dim,
                head: tokens * self.dim,
                token: self.dim,
            },
            HeadLayout::HeadsLast(_) => Strides {
                batch: tokens * self.heads * self.dim,
                head: self.dim,
                token: self.heads * self.dim,
            },
        }
    }
}

/// A pointer the tasks share to write disjoint parts of the output.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a different set of elements (its own head and query tile), and the
// buffer outlives the parallel loop that uses the pointer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// One product's operands: `out[rows × cols] = a[rows × len] · b[len × cols] · scale`, `a` and
/// `out` row-major at their row strides. `b` is stored in blocks of [`KEY_ALIGN`] columns: element
/// `(t, c)` is at `(c / KEY_ALIGN)·b_block + t·b_row + c % KEY_ALIGN` (a row-major matrix has
/// `b_block = KEY_ALIGN`; the transposed keys are packed block by block, `b_row = KEY_ALIGN`, so
/// a tile's rows are adjacent rather than a page apart). `b` is padded: every tile may read a
/// whole tile width of columns (`cols` rounded up to [`DIM_ALIGN`], or to the kernel's `W` where
/// that is more).
#[derive(Clone, Copy)]
struct Product {
    a: *const f32,
    a_row: usize,
    b: *const f32,
    b_row: usize,
    b_block: usize,
    len: usize,
    out: *mut f32,
    out_row: usize,
    rows: usize,
    cols: usize,
    scale: f32,
}

/// A register tile: `ROWS` rows of accumulators, `wide` (`W` columns) or narrow ([`DIM_ALIGN`]).
/// Implementations are `#[inline(always)]` and are only called from a function compiled for
/// their instruction set, where their intrinsics inline.
trait Kernel {
    /// Rows of a full tile.
    const R: usize;
    /// Columns of a wide tile (a multiple of [`DIM_ALIGN`]).
    const W: usize;
    /// `p.out[R × cols] = …` for the first `R` rows and up to `W` (`wide`) or [`DIM_ALIGN`]
    /// columns of `p`; `cols ≤` that width.
    ///
    /// # Safety
    /// `p` describes valid memory for those rows and (padded) columns.
    unsafe fn full(p: &Product, wide: bool, cols: usize);
    /// The same for the first row only.
    ///
    /// # Safety
    /// As [`Kernel::full`].
    unsafe fn one(p: &Product, wide: bool, cols: usize);
}

/// `full` and `one` of a [`Kernel`] from its generic `tile::<ROWS>`.
macro_rules! rows_from_tile {
    () => {
        #[inline(always)]
        unsafe fn full(p: &Product, wide: bool, cols: usize) {
            // SAFETY: forwarded.
            unsafe { Self::tile::<{ Self::R }>(p, wide, cols) }
        }
        #[inline(always)]
        unsafe fn one(p: &Product, wide: bool, cols: usize) {
            // SAFETY: forwarded.
            unsafe { Self::tile::<1>(p, wide, cols) }
        }
    };
}

/// The whole product in tiles: full tiles of `R` rows, leftover rows one at a time; wide tiles
/// of columns, a narrow one for a last stretch of up to [`DIM_ALIGN`] columns.
///
/// # Safety
/// `p` describes valid memory (see [`Product`]).
#[inline(always)]
unsafe fn product<K: Kernel>(p: Product) {
    // A wide tile never straddles two blocks of `b`.
    const { assert!(K::W <= KEY_ALIGN && KEY_ALIGN.is_multiple_of(K::W) && K::W.is_multiple_of(DIM_ALIGN)) };
    let mut c0 = 0;
    while c0 < p.cols {
        let left = p.cols - c0;
        let wide = left > DIM_ALIGN || K::W == DIM_ALIGN;
        let width = if wide { K::W } else { DIM_ALIGN };
        let mut r0 = 0;
        while r0 < p.rows {
            // SAFETY: in bounds of the product the caller described.
            let at = unsafe {
                Product {
                    a: p.a.add(r0 * p.a_row),
                    b: p.b.add((c0 / KEY_ALIGN) * p.b_block + c0 % KEY_ALIGN),
                    out: p.out.add(r0 * p.out_row + c0),
                    ..p
                }
            };
            if p.rows - r0 >= K::R {
                unsafe { K::full(&at, wide, left.min(width)) };
                r0 += K::R;
            } else {
                unsafe { K::one(&at, wide, left.min(width)) };
                r0 += 1;
            }
        }
        c0 += width;
    }
}

/// Scalar code for CPUs without AVX2 + FMA (the compiler vectorises what it can).
struct Plain;

impl Kernel for Plain {
    const R: usize = 4;
    const W: usize = DIM_ALIGN;
    rows_from_tile!();
}

impl Plain {
    #[inline(always)]
    unsafe fn tile<const ROWS: usize>(p: &Product, _wide: bool, cols: usize) {
        let mut acc = [[0f32; DIM_ALIGN]; ROWS];
        for t in 0..p.len {
            // SAFETY: within the product's extents (see `Product`).
            let bt = unsafe { &*(p.b.add(t * p.b_row) as *const [f32; DIM_ALIGN]) };
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = unsafe { *p.a.add(r * p.a_row + t) };
                for (acc, b) in acc.iter_mut().zip(bt) {
                    *acc += av * b;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (l, v) in acc.iter().enumerate().take(cols) {
                unsafe { *p.out.add(r * p.out_row + l) = v * p.scale };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Kernel, Product, DIM_ALIGN};
    use std::arch::x86_64::*;

    /// AVX-512: 12 rows × 32 columns, 24 of the 32 zmm registers accumulating.
    pub struct Avx512;

    #[inline(always)]
    unsafe fn tile512<const ROWS: usize, const NV: usize>(p: &Product, cols: usize) {
        // SAFETY (whole body): only reached from `#[target_feature(enable = "avx512f")]` code;
        // the memory is within the product's extents (see `Product`).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; ROWS];
            for t in 0..p.len {
                let bp = p.b.add(t * p.b_row);
                let mut bv = [_mm512_setzero_ps(); NV];
                for (j, bv) in bv.iter_mut().enumerate() {
                    *bv = _mm512_loadu_ps(bp.add(16 * j));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*p.a.add(r * p.a_row + t));
                    for (acc, bv) in acc.iter_mut().zip(&bv) {
                        *acc = _mm512_fmadd_ps(av, *bv, *acc);
                    }
                }
            }
            let s = _mm512_set1_ps(p.scale);
            for (r, acc) in acc.iter().enumerate() {
                for (j, acc) in acc.iter().enumerate() {
                    let (c0, v) = (16 * j, _mm512_mul_ps(*acc, s));
                    let o = p.out.add(r * p.out_row + c0);
                    if c0 + 16 <= cols {
                        _mm512_storeu_ps(o, v);
                    } else if c0 < cols {
                        _mm512_mask_storeu_ps(o, ((1u32 << (cols - c0)) - 1) as __mmask16, v);
                    }
                }
            }
        }
    }

    impl Kernel for Avx512 {
        const R: usize = 12;
        const W: usize = 32;
        rows_from_tile!();
    }

    impl Avx512 {
        #[inline(always)]
        unsafe fn tile<const ROWS: usize>(p: &Product, wide: bool, cols: usize) {
            const { assert!(DIM_ALIGN == 16) };
            // SAFETY: forwarded.
            unsafe {
                if wide {
                    tile512::<ROWS, 2>(p, cols)
                } else {
                    tile512::<ROWS, 1>(p, cols)
                }
            }
        }
    }

    /// AVX2 + FMA: 6 rows × 16 columns, 12 of the 16 ymm registers accumulating.
    pub struct Avx2;

    impl Kernel for Avx2 {
        const R: usize = 6;
        const W: usize = 16;
        rows_from_tile!();
    }

    impl Avx2 {
        #[inline(always)]
        unsafe fn tile<const ROWS: usize>(p: &Product, _wide: bool, cols: usize) {
            // SAFETY (whole body): only reached from `#[target_feature(enable = "avx2,fma")]`
            // code; the memory is within the product's extents (see `Product`).
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
                for t in 0..p.len {
                    let bp = p.b.add(t * p.b_row);
                    let bv = [_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8))];
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(*p.a.add(r * p.a_row + t));
                        for (acc, bv) in acc.iter_mut().zip(&bv) {
                            *acc = _mm256_fmadd_ps(av, *bv, *acc);
                        }
                    }
                }
                let s = _mm256_set1_ps(p.scale);
                for (r, acc) in acc.iter().enumerate() {
                    let mut row = [0f32; 16];
                    _mm256_storeu_ps(row.as_mut_ptr(), _mm256_mul_ps(acc[0], s));
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), _mm256_mul_ps(acc[1], s));
                    std::ptr::copy_nonoverlapping(row.as_ptr(), p.out.add(r * p.out_row), cols);
                }
            }
        }
    }
}

/// The row stride of a task's scores: the padded keys plus one cache line, so the rows a tile
/// reads together do not all fall in the same L1 cache set (4096 keys are 16 KiB a row).
fn score_row(keys: usize) -> usize {
    keys.next_multiple_of(KEY_ALIGN) + DIM_ALIGN
}

/// One head's keys transposed and packed in blocks of [`KEY_ALIGN`] keys (`dim × KEY_ALIGN` each,
/// zero keys padding the last) and values padded with zero dims (`keys × padded dim`).
struct HeadOperands<'a> {
    kt: &'a [f32],
    vp: &'a [f32],
}

/// One task: `rows` queries of one head, read from `q` (row stride `q_row`) and written to
/// `out` (row stride `out_row`, the same layout).
struct Task<'a> {
    q: *const f32,
    q_row: usize,
    head: HeadOperands<'a>,
    d: Dims,
    scale: f32,
    out: *mut f32,
    out_row: usize,
    rows: usize,
}

/// Runs one task with `scores` as its buffer.
///
/// # Safety
/// `q` and `out` hold `rows` rows of `dim` elements at their strides; `scores` holds `rows` rows
/// of [`score_row`] elements.
#[inline(always)]
unsafe fn task<K: Kernel>(t: &Task, scores: &mut [f32]) {
    let (d, rows) = (t.d, t.rows);
    let kp = d.keys.next_multiple_of(KEY_ALIGN);
    let dp = d.dim.next_multiple_of(DIM_ALIGN);
    let sr = score_row(d.keys);
    debug_assert!(
        scores.len() >= rows * sr && t.head.kt.len() == d.dim * kp && t.head.vp.len() == d.keys * dp
    );
    // SAFETY: q has `rows` rows of `dim`; kᵀ is dim × kp, kp a multiple of every W; scores is
    // rows × sr, sr ≥ kp.
    unsafe {
        product::<K>(Product {
            a: t.q,
            a_row: t.q_row,
            b: t.head.kt.as_ptr(),
            b_row: KEY_ALIGN,
            b_block: KEY_ALIGN * d.dim,
            len: d.dim,
            out: scores.as_mut_ptr(),
            out_row: sr,
            rows,
            cols: kp,
            scale: t.scale,
        });
    }
    for row in scores.chunks_exact_mut(sr).take(rows) {
        softmax_in_place(&mut row[..d.keys]);
    }
    // SAFETY: scores is rows × sr (the first `keys` columns read); v is keys × dp with dp the
    // head dim rounded up to DIM_ALIGN, and a wide tile is only used where W more columns exist;
    // out has `rows` rows of `dim` at stride out_row.
    unsafe {
        product::<K>(Product {
            a: scores.as_ptr(),
            a_row: sr,
            b: t.head.vp.as_ptr(),
            b_row: dp,
            b_block: KEY_ALIGN,
            len: d.keys,
            out: t.out,
            out_row: t.out_row,
            rows,
            cols: d.dim,
            scale: 1.0,
        });
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn task_avx512(t: &Task, scores: &mut [f32]) {
    // SAFETY: forwarded; this function is compiled for AVX-512.
    unsafe { task::<x86::Avx512>(t, scores) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_avx2(t: &Task, scores: &mut [f32]) {
    // SAFETY: forwarded; this function is compiled for AVX2 + FMA.
    unsafe { task::<x86::Avx2>(t, scores) }
}

/// The instruction sets the kernel has a tile for.
#[derive(Debug, Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Plain,
}

impl Isa {
    /// The instruction sets this CPU runs, fastest first.
    fn available() -> Vec<Isa> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                if has!("avx512f") {
                    all.push(Isa::Avx512);
                }
                all.push(Isa::Avx2);
            }
        }
        all.push(Isa::Plain);
        all
    }

    /// The fastest, detected once.
    fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }
}

fn sdpa_cpu(q: &[f32], k: &[f32], v: &[f32], d: Dims, layout: HeadLayout, scale: f32, isa: Isa) -> Vec<f32> {
    let (qs, ks) = (d.strides(d.queries, layout), d.strides(d.keys, layout));
    let kp = d.keys.next_multiple_of(KEY_ALIGN);
    let dp = d.dim.next_multiple_of(DIM_ALIGN);
    let heads = d.batch * d.heads;
    // Per head: kᵀ padded with zero keys, v padded with zero dims.
    let mut kt = vec![0f32; heads * d.dim * kp];
    let mut vp = vec![0f32; heads * d.keys * dp];
    kt.par_chunks_mut(d.dim * kp)
        .zip(vp.par_chunks_mut(d.keys * dp))
        .enumerate()
        .for_each(|(bh, (kt, vp))| {
            let base = (bh / d.heads) * ks.batch + (bh % d.heads) * ks.head;
            for t in 0..d.keys {
                let row = &k[base + t * ks.token..][..d.dim];
                for (i, &x) in row.iter().enumerate() {
                    kt[(t / KEY_ALIGN) * KEY_ALIGN * d.dim + i * KEY_ALIGN + t % KEY_ALIGN] = x;
                }
                vp[t * dp..t * dp + d.dim].copy_from_slice(&v[base + t * ks.token..][..d.dim]);
            }
        });
    let mut out = vec![0f32; q.len()];
    let optr = OutPtr(out.as_mut_ptr());
    let tiles = d.queries.div_ceil(TILE_ROWS);
    (0..heads * tiles).into_par_iter().for_each_init(
        || vec![0f32; TILE_ROWS * score_row(d.keys)],
        |scores, i| {
            let (bh, q0) = (i / tiles, (i % tiles) * TILE_ROWS);
            let rows = TILE_ROWS.min(d.queries - q0);
            let at = (bh / d.heads) * qs.batch + (bh % d.heads) * qs.head + q0 * qs.token;
            let head = HeadOperands {
                kt: &kt[bh * d.dim * kp..][..d.dim * kp],
                vp: &vp[bh * d.keys * dp..][..d.keys * dp],
            };
            let op = optr;
            let job = Task {
                q: q[at..].as_ptr(),
                q_row: qs.token,
                head,
                d,
                scale,
                // SAFETY: `at` is within the output, which has q's size.
                out: unsafe { op.0.add(at) },
                out_row: qs.token,
                rows,
            };
            // SAFETY: q and the output have `rows` rows of `dim` elements at stride qs.token from
            // `at` (the output has q's layout and size); each (head, tile) is one task, so tasks
            // write disjoint elements; `isa` is one this CPU has (`Isa::available`).
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => task_avx512(&job, scores),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => task_avx2(&job, scores),
                    Isa::Plain => task::<Plain>(&job, scores),
                }
            }
        },
    );
    out
}

impl CustomOp3 for Sdpa {
    fn name(&self) -> &'static str {
        "nanoimg-sdpa"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let f = super::kernels::contiguous_f32;
        let (q, k, v) = (f(s1, l1, name)?, f(s2, l2, name)?, f(s3, l3, name)?);
        let d = match self.layout {
            HeadLayout::HeadsFirst => {
                let (batch, heads, queries, dim) = l1.shape().dims4()?;
                let (kb, kh, keys, kd) = l2.shape().dims4()?;
                if (kb, kh, kd) != (batch, heads, dim) || l3.dims() != l2.dims() {
                    candle_core::bail!("{name}: q {:?}, k {:?}, v {:?}", l1.dims(), l2.dims(), l3.dims());
                }
                Dims {
                    batch,
                    heads,
                    queries,
                    keys,
                    dim,
                }
            }
            HeadLayout::HeadsLast(heads) => {
                let (batch, queries, width) = l1.shape().dims3()?;
                let (kb, keys, kw) = l2.shape().dims3()?;
                if heads == 0 || width % heads != 0 || (kb, kw) != (batch, width) || l3.dims() != l2.dims() {
                    candle_core::bail!(
                        "{name}: {heads} heads, q {:?}, k {:?}, v {:?}",
                        l1.dims(),
                        l2.dims(),
                        l3.dims()
                    );
                }
                Dims {
                    batch,
                    heads,
                    queries,
                    keys,
                    dim: width / heads,
                }
            }
        };
        let out = if d.keys == 0 || d.dim == 0 {
            vec![0f32; q.len()]
        } else {
            sdpa_cpu(q, k, v, d, self.layout, self.scale, Isa::best())
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Whether the fused kernel takes these tensors (CPU, f32).
pub fn supported(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

fn apply(q: &Tensor, k: &Tensor, v: &Tensor, layout: HeadLayout, scale: f64) -> Result<Tensor> {
    let op = Sdpa {
        layout,
        scale: scale as f32,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// Attention over `[batch, heads, tokens, dim]` tensors. CPU f32 only (see [`supported`]).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    apply(q, k, v, HeadLayout::HeadsFirst, scale)
}

/// Attention over `[batch, tokens, heads·dim]` projections, the output in the same layout (the
/// heads merged). CPU f32 only (see [`supported`]).
pub fn attention_heads_last(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    apply(q, k, v, HeadLayout::HeadsLast(heads), scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// candle's own ops, the definition: softmax(q·kᵀ·scale)·v.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        candle_nn::ops::softmax_last_dim(&s).unwrap().matmul(v).unwrap()
    }

    /// Odd shapes against the definition in both layouts: head dims of the SD family (40, 64,
    /// 80, 128) and odd ones, key counts off the 32-key padding (1, 77, 130), query counts off
    /// the tile and micro-tile sizes, on every instruction set this CPU has.
    #[test]
    fn matches_the_definition_on_odd_shapes() {
        let dev = Device::Cpu;
        for (b, h, nq, nk, dim) in [
            (1, 1, 1, 1, 1),
            (2, 3, 77, 77, 64),
            (1, 2, 100, 130, 40),
            (2, 1, 25, 7, 80),
            (1, 2, 49, 33, 128),
            (1, 1, 9, 300, 33),
            (1, 4, 5, 64, 8),
        ] {
            let q = Tensor::randn(0f32, 1.0, (b, h, nq, dim), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, h, nk, dim), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, h, nk, dim), &dev).unwrap();
            let scale = (dim as f64).powf(-0.5);
            let want = reference(&q, &k, &v, scale);
            let got = attention(&q, &k, &v, scale).unwrap();
            let diff = super::super::max_abs_diff(&got, &want).unwrap();
            assert!(diff < 1e-5, "heads first {b}×{h}×{nq}×{nk}×{dim}: {diff}");
            // The same numbers through the heads-last layout.
            let merge = |t: &Tensor| {
                t.transpose(1, 2)
                    .unwrap()
                    .flatten_from(2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let got = attention_heads_last(&merge(&q), &merge(&k), &merge(&v), h, scale).unwrap();
            let diff = super::super::max_abs_diff(&got, &merge(&want)).unwrap();
            assert!(diff < 1e-5, "heads last {b}×{h}×{nq}×{nk}×{dim}: {diff}");
        }
    }

    /// Every instruction set this CPU has gives the same result (the test above runs the
    /// fastest one through `attention`).
    #[test]
    fn every_instruction_set_agrees() {
        let d = Dims {
            batch: 1,
            heads: 2,
            queries: 29,
            keys: 45,
            dim: 40,
        };
        let n = |t: usize| d.batch * d.heads * t * d.dim;
        let rnd = |len: usize| {
            Tensor::randn(0f32, 1.0, len, &Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (q, k, v) = (rnd(n(d.queries)), rnd(n(d.keys)), rnd(n(d.keys)));
        let plain = sdpa_cpu(&q, &k, &v, d, HeadLayout::HeadsFirst, 0.3, Isa::Plain);
        for isa in Isa::available() {
            let got = sdpa_cpu(&q, &k, &v, d, HeadLayout::HeadsFirst, 0.3, isa);
            let diff = plain
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "{isa:?}: {diff}");
        }
    }
}
