//! The UNet's hook points: reached at every site, inert when they return nothing, effective when
//! they return something, and per request.

use crate::common;

use candle_core::{DType, Result, Tensor};
use nanoimg_engine::models::unet::hooks::{
    BlockKind, ExtraCrossAttention, SelfAttentionExtra, Site, Stage, UNetHooks,
};
use std::collections::BTreeSet;
use std::sync::Mutex;

fn unet_inputs(model: &nanoimg_engine::StableDiffusion) -> (Tensor, Tensor, Tensor) {
    let dev = model.device();
    let x = nanoimg_engine::pipeline::SeededNoise::new(5)
        .sample(&[1, 4, 8, 8], dev, DType::F32)
        .unwrap();
    let t = Tensor::new(&[500f32], dev).unwrap();
    let ctx = model.encode_text("a cat", false).unwrap().context;
    (x, t, ctx)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    nanoimg_engine::models::max_abs_diff(a, b).unwrap()
}

#[derive(Default)]
struct Recorder {
    attn_sites: Mutex<BTreeSet<Site>>,
    block_sites: Mutex<Vec<(Site, BlockKind)>>,
}

impl UNetHooks for Recorder {
    fn self_attention_context(&self, site: Site, _h: &Tensor) -> Result<Option<SelfAttentionExtra>> {
        self.attn_sites.lock().unwrap().insert(site);
        Ok(None)
    }
    fn block_output(&self, site: Site, kind: BlockKind, _x: &Tensor) -> Result<Option<Tensor>> {
        self.block_sites.lock().unwrap().push((site, kind));
        Ok(None)
    }
}

#[test]
fn hooks_that_return_nothing_leave_the_output_bit_identical_and_see_every_site() {
    let model = common::load("tiny-sd1");
    let (x, t, ctx) = unet_inputs(&model);
    let plain = model.unet().unwrap().forward(&x, &t, &ctx, None, None).unwrap();
    let rec = Recorder::default();
    let hooked = model
        .unet()
        .unwrap()
        .forward(&x, &t, &ctx, None, Some(&rec))
        .unwrap();
    assert_eq!(max_diff(&plain, &hooked), 0.0);
    // tiny SD1: one cross-attention down block (1 layer), the mid block, one cross-attention up
    // block (2 layers) → 4 transformer blocks.
    let sites = rec.attn_sites.lock().unwrap();
    assert_eq!(sites.len(), 4, "{sites:?}");
    assert!(sites.iter().any(|s| s.stage == Stage::Mid));
    // Resnets: down 1+1, mid 2, up 2+2 = 8; attentions: 1 + 1 + 2 = 4.
    let blocks = rec.block_sites.lock().unwrap();
    assert_eq!(blocks.iter().filter(|(_, k)| *k == BlockKind::Resnet).count(), 8);
    assert_eq!(
        blocks.iter().filter(|(_, k)| *k == BlockKind::Attention).count(),
        4
    );
}

/// Reference attention: record self-attention inputs in one pass, append them in the next.
struct ReferenceBank {
    write: bool,
    bank: Mutex<std::collections::HashMap<Site, Tensor>>,
}

impl UNetHooks for ReferenceBank {
    fn self_attention_context(&self, site: Site, h: &Tensor) -> Result<Option<SelfAttentionExtra>> {
        let mut bank = self.bank.lock().unwrap();
        if self.write {
            bank.insert(site, h.clone());
            Ok(None)
        } else {
            Ok(bank.get(&site).map(|tokens| SelfAttentionExtra {
                tokens: tokens.clone(),
                weights: None,
            }))
        }
    }
}

#[test]
fn reference_attention_bank_changes_the_prediction() {
    let model = common::load("tiny-sd1");
    let (x, t, ctx) = unet_inputs(&model);
    let reference = nanoimg_engine::pipeline::SeededNoise::new(99)
        .sample(&[1, 4, 8, 8], model.device(), DType::F32)
        .unwrap();
    let mut hook = ReferenceBank {
        write: true,
        bank: Mutex::new(Default::default()),
    };
    model
        .unet()
        .unwrap()
        .forward(&reference, &t, &ctx, None, Some(&hook))
        .unwrap();
    assert_eq!(hook.bank.lock().unwrap().len(), 4);
    hook.write = false;
    let plain = model.unet().unwrap().forward(&x, &t, &ctx, None, None).unwrap();
    let with_ref = model
        .unet()
        .unwrap()
        .forward(&x, &t, &ctx, None, Some(&hook))
        .unwrap();
    assert!(max_diff(&plain, &with_ref) > 1e-4);
}

struct AdaInToZero;

impl UNetHooks for AdaInToZero {
    fn block_output(&self, site: Site, kind: BlockKind, x: &Tensor) -> Result<Option<Tensor>> {
        if site.stage == Stage::Mid && kind == BlockKind::Resnet && site.layer == 1 {
            return Ok(Some(x.zeros_like()?));
        }
        Ok(None)
    }
}

#[test]
fn block_output_hook_replaces_the_block_output() {
    let model = common::load("tiny-sd1");
    let (x, t, ctx) = unet_inputs(&model);
    let plain = model.unet().unwrap().forward(&x, &t, &ctx, None, None).unwrap();
    let hooked = model
        .unet()
        .unwrap()
        .forward(&x, &t, &ctx, None, Some(&AdaInToZero))
        .unwrap();
    assert!(max_diff(&plain, &hooked) > 1e-4);
}

struct ExtraBranch(f64);

impl UNetHooks for ExtraBranch {
    fn extra_cross_attention(&self, _site: Site) -> Result<Option<ExtraCrossAttention>> {
        // Three image tokens, already projected to the attention's inner width (32 here).
        let keys = Tensor::ones((1, 3, 32), DType::F32, &candle_core::Device::Cpu)?;
        Ok(Some(ExtraCrossAttention {
            values: (&keys * 2.0)?,
            keys,
            scale: self.0,
        }))
    }
}

#[test]
fn extra_cross_attention_branch_is_added_with_its_scale() {
    // Pre-projected tokens must match each attention's inner width, so use a UNet whose every
    // attention (down, mid, up) is 32 wide.
    let dir = tempfile::tempdir().unwrap();
    let mut spec = nanoimg_engine::synthetic::SyntheticSpec::tiny(nanoimg_engine::Family::Sd1);
    spec.unet["block_out_channels"] = serde_json::json!([32, 32]);
    spec.unet["attention_head_dim"] = serde_json::json!([2, 2]);
    nanoimg_engine::synthetic::write_model(dir.path(), &spec, 11).unwrap();
    let model = nanoimg_engine::StableDiffusion::load(dir.path(), &Default::default()).unwrap();
    let (x, t, ctx) = unet_inputs(&model);
    let plain = model.unet().unwrap().forward(&x, &t, &ctx, None, None).unwrap();
    let zero = model
        .unet()
        .unwrap()
        .forward(&x, &t, &ctx, None, Some(&ExtraBranch(0.0)))
        .unwrap();
    let one = model
        .unet()
        .unwrap()
        .forward(&x, &t, &ctx, None, Some(&ExtraBranch(1.0)))
        .unwrap();
    assert!(max_diff(&plain, &zero) < 1e-5, "scale 0 must be a no-op");
    assert!(max_diff(&plain, &one) > 1e-4, "scale 1 must change the output");
}
