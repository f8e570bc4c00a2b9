//! LoRA files in kohya (SD and SDXL/SGM names) and diffusers/PEFT naming, merged into a copy of
//! the weights: equal to a dense f64 computation, equal to a model whose folder holds the merged
//! weights, and never changing the base model.

use crate::common;

use candle_core::{DType, Device, Tensor};
use nanoimg_engine::lora::names::Component;
use nanoimg_engine::lora::Lora;
use nanoimg_engine::models::max_abs_diff;
use nanoimg_engine::{EngineError, StableDiffusion};
use std::collections::HashMap;

/// A module to change: its component, its diffusers path, the rank and alpha.
struct Target {
    component: Component,
    module: &'static str,
    rank: usize,
    alpha: Option<f32>,
}

const SD1_TARGETS: [Target; 6] = [
    Target {
        component: Component::Unet,
        module: "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        rank: 4,
        alpha: Some(2.0),
    },
    Target {
        component: Component::Unet,
        module: "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0",
        rank: 2,
        alpha: None,
    },
    // A 3×3 convolution: down [r, in, 3, 3], up [out, r, 1, 1].
    Target {
        component: Component::Unet,
        module: "down_blocks.0.resnets.0.conv1",
        rank: 3,
        alpha: Some(1.5),
    },
    // SD1's proj_in is a 1×1 convolution; LoRAs trained on the linear form give [r, in] / [out, r].
    Target {
        component: Component::Unet,
        module: "up_blocks.1.attentions.1.proj_in",
        rank: 2,
        alpha: Some(4.0),
    },
    Target {
        component: Component::Unet,
        module: "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
        rank: 1,
        alpha: Some(1.0),
    },
    Target {
        component: Component::TextEncoder(0),
        module: "text_model.encoder.layers.1.self_attn.q_proj",
        rank: 4,
        alpha: Some(4.0),
    },
];

/// Random down/up matrices for each target, shaped from the model's weight.
fn random_pairs(model: &StableDiffusion, targets: &[Target], seed: u64) -> Vec<(Tensor, Tensor)> {
    let mut noise = nanoimg_engine::pipeline::SeededNoise::new(seed);
    targets
        .iter()
        .map(|t| {
            let w = &model.component_weights(t.component).unwrap()[&format!("{}.weight", t.module)];
            let dims = w.dims();
            let down_shape: Vec<usize> = if dims.len() == 4 && dims[2] > 1 {
                vec![t.rank, dims[1], dims[2], dims[3]]
            } else {
                vec![t.rank, dims[1]]
            };
            let up_shape: Vec<usize> = if dims.len() == 4 && dims[2] > 1 {
                vec![dims[0], t.rank, 1, 1]
            } else {
                vec![dims[0], t.rank]
            };
            let down = (noise.sample(&down_shape, &Device::Cpu, DType::F32).unwrap() * 0.3).unwrap();
            let up = (noise.sample(&up_shape, &Device::Cpu, DType::F32).unwrap() * 0.3).unwrap();
            (down, up)
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Naming {
    Kohya,
    Peft,
    /// diffusers' older `….lora.down.weight`, with the `unet.` prefix.
    DiffusersOld,
}

fn lora_tensors(targets: &[Target], pairs: &[(Tensor, Tensor)], naming: Naming) -> HashMap<String, Tensor> {
    let mut map = HashMap::new();
    for (t, (down, up)) in targets.iter().zip(pairs) {
        let (layer, d, u) = match naming {
            Naming::Kohya => {
                let prefix = match t.component {
                    Component::Unet => "lora_unet_",
                    Component::TextEncoder(_) => "lora_te_",
                };
                (
                    format!("{prefix}{}", t.module.replace('.', "_")),
                    ".lora_down.weight",
                    ".lora_up.weight",
                )
            }
            Naming::Peft | Naming::DiffusersOld => {
                let prefix = match t.component {
                    Component::Unet => "unet.",
                    Component::TextEncoder(_) => "text_encoder.",
                };
                let (d, u) = if matches!(naming, Naming::Peft) {
                    (".lora_A.weight", ".lora_B.weight")
                } else {
                    (".lora.down.weight", ".lora.up.weight")
                };
                (format!("{prefix}{}", t.module), d, u)
            }
        };
        map.insert(format!("{layer}{d}"), down.clone());
        map.insert(format!("{layer}{u}"), up.clone());
        if let Some(a) = t.alpha {
            map.insert(format!("{layer}.alpha"), Tensor::new(a, &Device::Cpu).unwrap());
        }
    }
    map
}

/// Writes the tensors as a real `.safetensors` file and parses it back.
fn through_file(tensors: &HashMap<String, Tensor>) -> Lora {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lora.safetensors");
    candle_core::safetensors::save(tensors, &path).unwrap();
    Lora::from_safetensors(&std::fs::read(&path).unwrap()).unwrap()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `W + s·(α/r)·up·down`, by loops in f64.
fn dense(w: &Tensor, down: &Tensor, up: &Tensor, alpha: Option<f32>, s: f64) -> Vec<f64> {
    let r = down.dim(0).unwrap();
    let (out, inner) = (up.dim(0).unwrap(), down.elem_count() / r);
    let (w, d, u) = (to_f64(w), to_f64(down), to_f64(up));
    let scale = s * alpha.map_or(r as f64, f64::from) / r as f64;
    let mut res = w.clone();
    for o in 0..out {
        for i in 0..inner {
            let sum: f64 = (0..r).map(|k| u[o * r + k] * d[k * inner + i]).sum();
            res[o * inner + i] += scale * sum;
        }
    }
    res
}

fn unet_out(model: &StableDiffusion) -> Tensor {
    let dev = model.device();
    let x = nanoimg_engine::pipeline::SeededNoise::new(5)
        .sample(&[1, 4, 8, 8], dev, DType::F32)
        .unwrap();
    let t = Tensor::new(&[500f32], dev).unwrap();
    let ctx = model.encode_text("a cat", false).unwrap().context;
    model.unet().unwrap().forward(&x, &t, &ctx, None, None).unwrap()
}

fn snapshot(model: &StableDiffusion, c: Component) -> HashMap<String, Vec<f64>> {
    model
        .component_weights(c)
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), to_f64(v)))
        .collect()
}

#[test]
fn a_kohya_lora_merges_to_the_dense_reference_and_leaves_the_base_untouched() {
    let base = common::load("tiny-sd1");
    let pairs = random_pairs(&base, &SD1_TARGETS, 3);
    let lora = through_file(&lora_tensors(&SD1_TARGETS, &pairs, Naming::Kohya));
    assert_eq!(lora.layers().len(), SD1_TARGETS.len());
    let before_unet = snapshot(&base, Component::Unet);
    let before_te = snapshot(&base, Component::TextEncoder(0));
    let out_before = unet_out(&base);

    let s = 0.7;
    let merged = base.with_loras(&[(&lora, s)]).unwrap();
    for (t, (down, up)) in SD1_TARGETS.iter().zip(&pairs) {
        let name = format!("{}.weight", t.module);
        let expect = dense(
            &base.component_weights(t.component).unwrap()[&name],
            down,
            up,
            t.alpha,
            s,
        );
        let got = to_f64(&merged.component_weights(t.component).unwrap()[&name]);
        let worst = expect
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "{name}: off by {worst}");
        let moved = expect
            .iter()
            .zip(to_f64(&base.component_weights(t.component).unwrap()[&name]))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(moved > 1e-3, "{name}: the LoRA changed nothing ({moved})");
    }
    // Untouched tensors are the base's own.
    let untouched = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight";
    assert_eq!(
        to_f64(&merged.component_weights(Component::Unet).unwrap()[untouched]),
        before_unet[untouched]
    );
    assert!(max_abs_diff(&unet_out(&merged), &out_before).unwrap() > 1e-4);
    assert!(
        max_abs_diff(
            &merged.encode_text("a cat", false).unwrap().context,
            &base.encode_text("a cat", false).unwrap().context
        )
        .unwrap()
            > 1e-4,
        "the text-encoder layer took effect"
    );

    // Un-merge: drop the merged model; the base is bit-identical, weights and output.
    drop(merged);
    assert_eq!(snapshot(&base, Component::Unet), before_unet);
    assert_eq!(snapshot(&base, Component::TextEncoder(0)), before_te);
    assert_eq!(max_abs_diff(&unet_out(&base), &out_before).unwrap(), 0.0);
    // Strength 0 is the base exactly.
    let zero = base.with_loras(&[(&lora, 0.0)]).unwrap();
    assert_eq!(max_abs_diff(&unet_out(&zero), &out_before).unwrap(), 0.0);
}

#[test]
fn the_merged_model_equals_a_model_loaded_from_merged_weights() {
    // Merge densely in f64, write the weights into a copy of the model folder, load it the
    // normal way: its UNet and text encoder must agree with `with_loras`.
    let base = common::load("tiny-sd1");
    let pairs = random_pairs(&base, &SD1_TARGETS, 4);
    let lora = through_file(&lora_tensors(&SD1_TARGETS, &pairs, Naming::Kohya));
    let s = 1.3;
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&common::path("tiny-sd1"), dir.path());
    for (c, sub, file) in [
        (Component::Unet, "unet", "diffusion_pytorch_model.safetensors"),
        (Component::TextEncoder(0), "text_encoder", "model.safetensors"),
    ] {
        let path = dir.path().join(sub).join(file);
        let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        for (t, (down, up)) in SD1_TARGETS.iter().zip(&pairs).filter(|(t, _)| t.component == c) {
            let name = format!("{}.weight", t.module);
            let w = &tensors[&name];
            let merged: Vec<f32> = dense(w, down, up, t.alpha, s).iter().map(|v| *v as f32).collect();
            let merged = Tensor::from_vec(merged, w.dims(), &Device::Cpu).unwrap();
            tensors.insert(name, merged);
        }
        candle_core::safetensors::save(&tensors, &path).unwrap();
    }
    let reference = StableDiffusion::load(dir.path(), &Default::default()).unwrap();
    let merged = base.with_loras(&[(&lora, s)]).unwrap();
    let d = max_abs_diff(&unet_out(&merged), &unet_out(&reference)).unwrap();
    assert!(d < 1e-4, "UNet outputs differ by {d}");
}

#[test]
fn a_lora_merged_into_an_int8_model_stays_int8_and_close_to_f32() {
    let base = common::load("tiny-sd1");
    let opts = nanoimg_engine::LoadOptions {
        quantize: Some(nanoimg_engine::Quantization::Int8),
        ..Default::default()
    };
    let q = StableDiffusion::load(&common::path("tiny-sd1"), &opts).unwrap();
    let pairs = random_pairs(&base, &SD1_TARGETS, 6);
    let lora = through_file(&lora_tensors(&SD1_TARGETS, &pairs, Naming::Kohya));
    let (merged, merged_q) = (
        base.with_loras(&[(&lora, 1.0)]).unwrap(),
        q.with_loras(&[(&lora, 1.0)]).unwrap(),
    );
    assert!(merged_q.unet().unwrap().is_int8());
    let rel = crate::int8::relative(&unet_out(&merged_q), &unet_out(&merged));
    assert!(rel < 0.05, "int8 merge {rel} from the f32 merge");
    assert!(
        max_abs_diff(&unet_out(&merged_q), &unet_out(&q)).unwrap() > 1e-4,
        "the LoRA took effect"
    );
    // The int8 model keeps no f32 UNet tensors but reads them back, merged ones on top, so a
    // merge onto the merged model starts from the same tensors as in f32.
    assert_eq!(
        snapshot(&merged_q, Component::Unet),
        snapshot(&merged, Component::Unet)
    );
    let (twice, twice_q) = (
        merged.with_loras(&[(&lora, 0.5)]).unwrap(),
        merged_q.with_loras(&[(&lora, 0.5)]).unwrap(),
    );
    assert_eq!(
        snapshot(&twice_q, Component::Unet),
        snapshot(&twice, Component::Unet)
    );
    let rel = crate::int8::relative(&unet_out(&twice_q), &unet_out(&twice));
    assert!(rel < 0.05, "int8 double merge {rel} from f32");
}

#[test]
fn peft_and_old_diffusers_names_give_the_same_merge_as_kohya() {
    let base = common::load("tiny-sd1");
    let pairs = random_pairs(&base, &SD1_TARGETS, 5);
    let kohya = base
        .with_loras(&[(
            &through_file(&lora_tensors(&SD1_TARGETS, &pairs, Naming::Kohya)),
            1.0,
        )])
        .unwrap();
    for naming in [Naming::Peft, Naming::DiffusersOld] {
        let other = base
            .with_loras(&[(&through_file(&lora_tensors(&SD1_TARGETS, &pairs, naming)), 1.0)])
            .unwrap();
        assert_eq!(max_abs_diff(&unet_out(&kohya), &unet_out(&other)).unwrap(), 0.0);
        assert_eq!(
            snapshot(&kohya, Component::TextEncoder(0)),
            snapshot(&other, Component::TextEncoder(0))
        );
    }
}

#[test]
fn several_loras_add_up_and_swapping_starts_from_the_base() {
    let base = common::load("tiny-sd1");
    let pa = random_pairs(&base, &SD1_TARGETS, 6);
    let pb = random_pairs(&base, &SD1_TARGETS, 7);
    let a = through_file(&lora_tensors(&SD1_TARGETS, &pa, Naming::Kohya));
    let b = through_file(&lora_tensors(&SD1_TARGETS, &pb, Naming::Peft));
    let both = base.with_loras(&[(&a, 0.5), (&b, -0.8)]).unwrap();
    let t = &SD1_TARGETS[0];
    let name = format!("{}.weight", t.module);
    let w = &base.component_weights(t.component).unwrap()[&name];
    let after_a = Tensor::from_vec(
        dense(w, &pa[0].0, &pa[0].1, t.alpha, 0.5)
            .iter()
            .map(|v| *v as f32)
            .collect::<Vec<_>>(),
        w.dims(),
        &Device::Cpu,
    )
    .unwrap();
    let expect = dense(&after_a, &pb[0].0, &pb[0].1, t.alpha, -0.8);
    let got = to_f64(&both.component_weights(t.component).unwrap()[&name]);
    let worst = expect
        .iter()
        .zip(&got)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "{worst}");

    // Swap: B alone, built from the base, is not A+B and not A.
    let only_b = base.with_loras(&[(&b, -0.8)]).unwrap();
    let direct_b = dense(w, &pb[0].0, &pb[0].1, t.alpha, -0.8);
    let got_b = to_f64(&only_b.component_weights(t.component).unwrap()[&name]);
    let worst = direct_b
        .iter()
        .zip(&got_b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "{worst}");
}

#[test]
fn sdxl_kohya_files_with_original_unet_names_resolve() {
    // tiny-sdxl: down block 0 without attention (1 resnet + downsampler), block 1 with
    // attention (2 transformer layers); up block 0 with attention, 2 resnets + upsampler.
    let base = common::load("tiny-sdxl");
    let cases = [
        (
            "lora_unet_input_blocks_3_1_transformer_blocks_1_attn1_to_v",
            "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_v",
        ),
        (
            "lora_unet_input_blocks_1_0_in_layers_2",
            "down_blocks.0.resnets.0.conv1",
        ),
        (
            "lora_unet_input_blocks_2_0_op",
            "down_blocks.0.downsamplers.0.conv",
        ),
        (
            "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k",
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
        ),
        (
            "lora_unet_output_blocks_1_1_proj_out",
            "up_blocks.0.attentions.1.proj_out",
        ),
        (
            "lora_unet_output_blocks_1_2_conv",
            "up_blocks.0.upsamplers.0.conv",
        ),
        ("lora_unet_time_embed_0", "time_embedding.linear_1"),
    ];
    let mut noise = nanoimg_engine::pipeline::SeededNoise::new(8);
    let mut tensors = HashMap::new();
    let mut expected = Vec::new();
    for (kohya, module) in cases {
        let w = &base.component_weights(Component::Unet).unwrap()[&format!("{module}.weight")];
        let dims = w.dims();
        let down: Vec<usize> = std::iter::once(2).chain(dims[1..].iter().copied()).collect();
        let up: Vec<usize> = if dims.len() == 4 {
            vec![dims[0], 2, 1, 1]
        } else {
            vec![dims[0], 2]
        };
        let d = noise.sample(&down, &Device::Cpu, DType::F32).unwrap();
        let u = noise.sample(&up, &Device::Cpu, DType::F32).unwrap();
        expected.push((module, dense(w, &d, &u, None, 1.0)));
        tensors.insert(format!("{kohya}.lora_down.weight"), d);
        tensors.insert(format!("{kohya}.lora_up.weight"), u);
    }
    // The second text encoder, by `lora_te2_`.
    let q = "text_model.encoder.layers.0.self_attn.q_proj";
    let w2 = &base.component_weights(Component::TextEncoder(1)).unwrap()[&format!("{q}.weight")];
    let (d, u) = (
        noise
            .sample(&[1, w2.dim(1).unwrap()], &Device::Cpu, DType::F32)
            .unwrap(),
        noise
            .sample(&[w2.dim(0).unwrap(), 1], &Device::Cpu, DType::F32)
            .unwrap(),
    );
    let expect_te2 = dense(w2, &d, &u, None, 1.0);
    tensors.insert(format!("lora_te2_{}.lora_down.weight", q.replace('.', "_")), d);
    tensors.insert(format!("lora_te2_{}.lora_up.weight", q.replace('.', "_")), u);

    let merged = base.with_loras(&[(&through_file(&tensors), 1.0)]).unwrap();
    for (module, expect) in expected {
        let got = to_f64(&merged.component_weights(Component::Unet).unwrap()[&format!("{module}.weight")]);
        let worst = expect
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "{module}: {worst}");
    }
    let got = to_f64(&merged.component_weights(Component::TextEncoder(1)).unwrap()[&format!("{q}.weight")]);
    let worst = expect_te2
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "te2: {worst}");
    // The first text encoder is shared, not copied.
    assert_eq!(
        snapshot(&merged, Component::TextEncoder(0)),
        snapshot(&base, Component::TextEncoder(0))
    );
}

#[test]
fn an_f16_model_merges_in_f32_and_rounds_once() {
    let base = common::load_as("tiny-sd1", DType::F16);
    let pairs = random_pairs(&base, &SD1_TARGETS, 9);
    let lora = through_file(&lora_tensors(&SD1_TARGETS, &pairs, Naming::Kohya));
    let merged = base.with_loras(&[(&lora, 1.0)]).unwrap();
    for (t, (down, up)) in SD1_TARGETS.iter().zip(&pairs) {
        let name = format!("{}.weight", t.module);
        let w = &merged.component_weights(t.component).unwrap()[&name];
        assert_eq!(w.dtype(), DType::F16);
        let expect = dense(
            &base.component_weights(t.component).unwrap()[&name],
            down,
            up,
            t.alpha,
            1.0,
        );
        for (e, g) in expect.iter().zip(to_f64(w)) {
            // One rounding to f16: within half an ulp (2^-11 relative), plus f32 noise.
            let ulp = half::f16::from_f64(*e).to_f64().abs().max(1e-4) * 2f64.powi(-10);
            assert!((e - g).abs() <= ulp, "{name}: {e} vs {g}");
        }
    }
}

fn lora_error(base: &StableDiffusion, tensors: HashMap<String, Tensor>) -> String {
    let err = match Lora::from_tensors(tensors) {
        Err(e) => e,
        Ok(lora) => base.with_loras(&[(&lora, 1.0)]).unwrap_err(),
    };
    match &err {
        EngineError::InvalidParam(p) => assert_eq!(p.param, "lora", "{err}"),
        other => panic!("expected an InvalidParam, got {other:?}"),
    }
    err.to_string()
}

#[test]
fn wrong_or_hostile_files_are_refused_with_the_reason() {
    let sd1 = common::load("tiny-sd1");
    let sdxl = common::load("tiny-sdxl");
    let cpu = &Device::Cpu;
    let z = |shape: &[usize]| Tensor::zeros(shape, DType::F32, cpu).unwrap();

    // An SD1 LoRA on the SDXL model: modules it does not have.
    let pairs = random_pairs(&sd1, &SD1_TARGETS, 10);
    let e = lora_error(&sdxl, lora_tensors(&SD1_TARGETS, &pairs, Naming::Kohya));
    assert!(e.contains("another"), "{e}");
    // Right name, wrong shape.
    let name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let e = lora_error(
        &sd1,
        HashMap::from([
            (format!("{name}.lora_down.weight"), z(&[2, 999])),
            (format!("{name}.lora_up.weight"), z(&[32, 2])),
        ]),
    );
    assert!(e.contains("for another model"), "{e}");
    // A lone half, mismatched ranks, LoHa, a non-positive alpha, integers, nothing.
    let e = lora_error(
        &sd1,
        HashMap::from([(format!("{name}.lora_down.weight"), z(&[2, 32]))]),
    );
    assert!(e.contains("lacks"), "{e}");
    let e = lora_error(
        &sd1,
        HashMap::from([
            (format!("{name}.lora_down.weight"), z(&[2, 32])),
            (format!("{name}.lora_up.weight"), z(&[32, 3])),
        ]),
    );
    assert!(e.contains("low-rank pair"), "{e}");
    let e = lora_error(&sd1, HashMap::from([(format!("{name}.hada_w1_a"), z(&[2, 32]))]));
    assert!(e.contains("LoHa"), "{e}");
    let e = lora_error(
        &sd1,
        HashMap::from([
            (format!("{name}.lora_down.weight"), z(&[2, 32])),
            (format!("{name}.lora_up.weight"), z(&[32, 2])),
            (format!("{name}.alpha"), Tensor::new(-1f32, cpu).unwrap()),
        ]),
    );
    assert!(e.contains("positive"), "{e}");
    let e = lora_error(
        &sd1,
        HashMap::from([(
            format!("{name}.lora_down.weight"),
            Tensor::zeros((2, 32), DType::U8, cpu).unwrap(),
        )]),
    );
    assert!(e.contains("not a float"), "{e}");
    assert!(lora_error(&sd1, HashMap::new()).contains("no LoRA layers"));
    // Not a safetensors file at all.
    for junk in [&b""[..], b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage", b"{\"a\":1}"] {
        let e = Lora::from_safetensors(junk).unwrap_err().to_string();
        assert!(e.contains("safetensors"), "{e}");
    }
    // Strengths out of range.
    let lora = through_file(&lora_tensors(&SD1_TARGETS, &pairs, Naming::Kohya));
    for s in [f64::NAN, f64::INFINITY, 100.0] {
        let e = sd1.with_loras(&[(&lora, s)]).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
