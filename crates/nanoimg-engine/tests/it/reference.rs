//! Reference conditioning on tiny models: bank shapes and gates, AdaIN statistics, the blend
//! weights, the bank cache (reuse, bound, forgetting) and validation.

use crate::common::{self, load, mean_abs_diff, test_image};

use candle_core::{DType, Device, Tensor};
use nanoimg_core::{Limits, SchedulerName};
use nanoimg_engine::models::max_abs_diff;
use nanoimg_engine::models::unet::hooks::{BlockKind, Site, Stage, UNetHooks};
use nanoimg_engine::reference::bank::{adain, channel_stats, Gates, Reader, StepBank, Writer};
use nanoimg_engine::reference::{BankCache, Combine, Reference, ReferenceSettings};
use nanoimg_engine::{CancelToken, EngineError, GenerateRequest, NoProgress, StableDiffusion};
use std::sync::Arc;

fn reference(images: Vec<image::RgbImage>, settings: ReferenceSettings) -> Arc<Reference> {
    Arc::new(Reference {
        key: "char_test".into(),
        images,
        prompt: "a red cat".into(),
        seed: 7,
        settings,
        cache: None,
    })
}

/// `r` with its banks kept in `cache`.
fn with_cache(r: &Arc<Reference>, cache: &Arc<BankCache>) -> Arc<Reference> {
    Arc::new(Reference {
        cache: Some(cache.clone()),
        ..(**r).clone()
    })
}

/// A picture unlike `test_image`: stripes.
fn stripes(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, _| {
        if (x / 4) % 2 == 0 {
            image::Rgb([230, 40, 40])
        } else {
            image::Rgb([20, 20, 200])
        }
    })
}

fn request(model: &StableDiffusion, prompt: &str, seed: u64, r: Option<Arc<Reference>>) -> GenerateRequest {
    GenerateRequest {
        steps: 3,
        guidance: 4.0,
        seed,
        scheduler: SchedulerName::Euler,
        reference: r,
        ..GenerateRequest::new(model, prompt)
    }
}

fn run(model: &StableDiffusion, req: &GenerateRequest) -> Vec<image::RgbImage> {
    model
        .generate(req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|g| g.image)
        .collect()
}

/// Runs one write pass of `r` references (random latents) through the tiny SD1 UNet.
fn write_pass(model: &StableDiffusion, r: usize, combine: Combine) -> Writer<'static> {
    let dev = model.device();
    let x = nanoimg_engine::pipeline::SeededNoise::new(3)
        .sample(&[r, 4, 8, 8], dev, DType::F32)
        .unwrap();
    let t = Tensor::new(vec![400f32; r], dev).unwrap();
    let ctx = model
        .encode_text("a cat", false)
        .unwrap()
        .context
        .repeat((r, 1, 1))
        .unwrap();
    let writer = Writer::new(combine, None);
    model
        .unet()
        .unwrap()
        .forward(&x, &t, &ctx, None, Some(&writer))
        .unwrap();
    writer
}

#[test]
fn the_write_pass_records_every_site_in_the_bank_shapes() {
    let model = load("tiny-sd1");
    let writer = write_pass(&model, 3, Combine::Concat);
    let (attn, blocks) = writer.sites();
    // tiny SD1: 4 transformer blocks (down 32 wide at 8×8, mid 64 wide at 4×4, up 2 × 32 wide at
    // 8×8); 8 resnets + 4 attention blocks.
    assert_eq!(attn.len(), 4);
    assert_eq!(blocks.len(), 12);
    let all = Gates::choose(&attn, &blocks, 1.0, 1.0);
    let bank = writer.into_bank(&all);
    for (site, tokens) in &bank.attention {
        let (b, n, c) = tokens.dims3().unwrap();
        let hw = if site.stage == Stage::Mid { 16 } else { 64 };
        assert_eq!((b, n), (1, 3 * hw), "{site}: three references side by side");
        assert_eq!(c, if site.stage == Stage::Mid { 64 } else { 32 }, "{site}");
    }
    assert_eq!(bank.stats.len(), 12);
    for ((site, _), (mean, std)) in &bank.stats {
        assert_eq!(mean.dims4().unwrap(), (1, mean.dim(1).unwrap(), 1, 1), "{site}");
        assert_eq!(mean.dims(), std.dims());
        assert!(std
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|s| *s > 0.0));
    }
    assert!(bank.bytes() > 0);

    // Averaged: one reference's worth of tokens.
    let writer = write_pass(&model, 3, Combine::Average);
    let (attn, blocks) = writer.sites();
    let bank = writer.into_bank(&Gates::choose(&attn, &blocks, 1.0, 0.0));
    for (site, tokens) in &bank.attention {
        let hw = if site.stage == Stage::Mid { 16 } else { 64 };
        assert_eq!(tokens.dims3().unwrap().1, hw, "{site}");
    }
    assert!(bank.stats.is_empty(), "AdaIN gated off");
}

#[test]
fn gates_keep_the_widest_layers_first() {
    let model = load("tiny-sd1");
    let writer = write_pass(&model, 1, Combine::Concat);
    let (attn, blocks) = writer.sites();
    let half = Gates::choose(&attn, &blocks, 0.5, 0.25);
    assert_eq!(half.attention.len(), 2);
    assert!(
        half.attention.iter().any(|s| s.stage == Stage::Mid),
        "the 64-wide mid block goes first: {:?}",
        half.attention
    );
    assert_eq!(half.adain.len(), 3);
    let widest = blocks.iter().map(|(_, _, w)| *w).max().unwrap();
    for (site, kind) in &half.adain {
        let w = blocks.iter().find(|(s, k, _)| s == site && k == kind).unwrap().2;
        assert_eq!(w, widest, "{site} {kind:?}");
    }
    let none = Gates::choose(&attn, &blocks, 0.0, 0.0);
    assert!(none.attention.is_empty() && none.adain.is_empty());
    // A gated writer records only what the gates keep.
    let gated = Writer::new(Combine::Concat, Some(&half));
    let dev = model.device();
    let x = nanoimg_engine::pipeline::SeededNoise::new(3)
        .sample(&[1, 4, 8, 8], dev, DType::F32)
        .unwrap();
    let ctx = model.encode_text("a cat", false).unwrap().context;
    model
        .unet()
        .unwrap()
        .forward(
            &x,
            &Tensor::new(&[400f32], dev).unwrap(),
            &ctx,
            None,
            Some(&gated),
        )
        .unwrap();
    let (a, b) = gated.sites();
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 3);
}

#[test]
fn adain_moves_each_sample_to_the_reference_statistics() {
    let dev = Device::Cpu;
    let mut noise = nanoimg_engine::pipeline::SeededNoise::new(1);
    let x = (noise.sample(&[2, 6, 5, 7], &dev, DType::F32).unwrap() * 3.0).unwrap();
    let reference = ((noise.sample(&[1, 6, 5, 7], &dev, DType::F32).unwrap() * 0.5).unwrap() + 2.0).unwrap();
    let (mean, std) = channel_stats(&reference).unwrap();
    let moved = adain(&x, &mean, &std).unwrap();
    let (m2, s2) = channel_stats(&moved).unwrap();
    for i in 0..2 {
        assert!(max_abs_diff(&m2.get(i).unwrap().unsqueeze(0).unwrap(), &mean).unwrap() < 1e-4);
        assert!(max_abs_diff(&s2.get(i).unwrap().unsqueeze(0).unwrap(), &std).unwrap() < 1e-4);
    }
    // Statistics by hand for one channel.
    let v: Vec<f32> = reference
        .get(0)
        .unwrap()
        .get(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mu = v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (f64::from(*x) - mu).powi(2)).sum::<f64>() / v.len() as f64;
    let got_mu = f64::from(mean.flatten_all().unwrap().to_vec1::<f32>().unwrap()[2]);
    let got_sd = f64::from(std.flatten_all().unwrap().to_vec1::<f32>().unwrap()[2]);
    assert!((got_mu - mu).abs() < 1e-5 && (got_sd - (var + 1e-6).sqrt()).abs() < 1e-5);

    // The reader blends per sample: weight 0 leaves sample 0 alone, 0.5 goes halfway.
    let mut bank = StepBank::default();
    let site = Site {
        stage: Stage::Mid,
        block: 0,
        layer: 0,
        transformer: 0,
    };
    bank.stats.insert((site, BlockKind::Resnet), (mean, std));
    let reader = Reader::new(&bank, &[0.0, 0.5], DType::F32, &dev).unwrap();
    let out = reader.block_output(site, BlockKind::Resnet, &x).unwrap().unwrap();
    assert_eq!(
        max_abs_diff(&out.get(0).unwrap(), &x.get(0).unwrap()).unwrap(),
        0.0
    );
    let halfway = ((x.get(1).unwrap() + moved.get(1).unwrap()).unwrap() * 0.5).unwrap();
    assert!(max_abs_diff(&out.get(1).unwrap(), &halfway).unwrap() < 1e-5);
    // Sites without statistics are left alone.
    assert!(reader
        .block_output(Site { block: 1, ..site }, BlockKind::Resnet, &x)
        .unwrap()
        .is_none());
}

#[test]
fn a_reference_changes_the_image_and_strength_zero_changes_nothing() {
    let model = load("tiny-sd1");
    let plain = run(&model, &request(&model, "a cat", 5, None));
    let off = ReferenceSettings {
        strength: 0.0,
        ..Default::default()
    };
    let zero = run(
        &model,
        &request(&model, "a cat", 5, Some(reference(vec![stripes(64, 64)], off))),
    );
    assert_eq!(plain, zero, "strength 0 is no reference at all");
    for (attention, adain) in [(1.0, 0.0), (0.0, 1.0), (1.0, 0.5)] {
        let s = ReferenceSettings {
            strength: 1.0,
            attention,
            adain,
            ..Default::default()
        };
        let with = run(
            &model,
            &request(&model, "a cat", 5, Some(reference(vec![stripes(64, 64)], s))),
        );
        let d = mean_abs_diff(&plain[0], &with[0]);
        assert!(
            d > 0.5,
            "attention {attention} adain {adain}: only {d} levels apart"
        );
    }
    // Different references give different images.
    let s = ReferenceSettings {
        strength: 1.0,
        ..Default::default()
    };
    let a = run(
        &model,
        &request(&model, "a cat", 5, Some(reference(vec![stripes(64, 64)], s))),
    );
    let b = run(
        &model,
        &request(&model, "a cat", 5, Some(reference(vec![test_image(64, 64)], s))),
    );
    assert!(mean_abs_diff(&a[0], &b[0]) > 0.5);
}

#[test]
fn banks_are_cached_and_reused_across_prompts_seeds_and_strengths() {
    let model = common::load("tiny-sd1");
    let cache = Arc::new(BankCache::new(64 << 20));
    let r = with_cache(
        &reference(
            vec![stripes(64, 64), test_image(64, 64)],
            ReferenceSettings::default(),
        ),
        &cache,
    );
    let first = run(&model, &request(&model, "a cat", 1, Some(r.clone())));
    let s = cache.stats();
    assert_eq!((s.misses, s.hits, s.entries), (1, 0, 1), "{s:?}");
    assert!(s.bytes > 0);

    // Another prompt, seed and strength: the same bank.
    let mut stronger = (*r).clone();
    stronger.settings.strength = 1.0;
    let second = run(
        &model,
        &request(&model, "a dog", 2, Some(Arc::new(stronger.clone()))),
    );
    let s2 = cache.stats();
    assert_eq!(
        (s2.misses, s2.hits, s2.entries, s2.bytes),
        (1, 1, 1, s.bytes),
        "{s2:?}"
    );

    // A cached bank gives exactly what a fresh one gives: with no cache, and with a cache that
    // keeps nothing.
    let uncached = Reference {
        cache: None,
        ..stronger.clone()
    };
    assert_eq!(
        run(&model, &request(&model, "a dog", 2, Some(Arc::new(uncached)))),
        second
    );
    let nothing = Arc::new(BankCache::new(0));
    assert_eq!(
        run(
            &model,
            &request(&model, "a cat", 1, Some(with_cache(&r, &nothing)))
        ),
        first
    );
    let s0 = nothing.stats();
    assert_eq!((s0.entries, s0.bytes), (0, 0), "budget 0 keeps nothing: {s0:?}");
    assert_eq!(cache.stats().hits, 1, "the other caches did not read this one");

    // n images in one request share the bank (one miss), and each equals its single run.
    let own = Arc::new(BankCache::new(64 << 20));
    let mut req = request(&model, "a cat", 1, Some(with_cache(&r, &own)));
    req.n = 2;
    let two = run(&model, &req);
    assert_eq!(own.stats().misses, 1);
    assert_eq!(two[0], first[0]);

    // A run holds no more banks than the budget: with room for none, the second image records
    // its banks again (the same ones: it equals the run that kept them), and no whole bank is
    // ever offered to the cache.
    let none = Arc::new(BankCache::new(1));
    let mut req = request(&model, "a cat", 1, Some(with_cache(&r, &none)));
    req.n = 2;
    assert_eq!(run(&model, &req), two);
    let s = none.stats();
    assert_eq!((s.entries, s.too_large, s.misses), (0, 0, 1), "{s:?}");

    // Another size or schedule is another bank.
    let mut other = request(&model, "a cat", 1, Some(r.clone()));
    other.steps = 4;
    run(&model, &other);
    assert_eq!(cache.stats().entries, 2);

    // Forgetting the character drops its banks.
    assert_eq!(cache.forget("char_test"), 2);
    let s3 = cache.stats();
    assert_eq!((s3.entries, s3.bytes), (0, 0));
}

#[test]
fn the_cache_stays_within_its_budget() {
    let model = common::load("tiny-sd1");
    let r = |key: &str, cache: &Arc<BankCache>| {
        let base = reference(vec![stripes(64, 64)], ReferenceSettings::default());
        Arc::new(Reference {
            key: key.into(),
            cache: Some(cache.clone()),
            ..(*base).clone()
        })
    };
    let probe = Arc::new(BankCache::new(64 << 20));
    run(&model, &request(&model, "a cat", 1, Some(r("a", &probe))));
    let one = probe.stats().bytes;

    // Room for one bank: the second evicts the first.
    let cache = Arc::new(BankCache::new(one + one / 2));
    run(&model, &request(&model, "a cat", 1, Some(r("a", &cache))));
    run(&model, &request(&model, "a cat", 1, Some(r("b", &cache))));
    let s = cache.stats();
    assert_eq!((s.entries, s.bytes), (1, one), "{s:?}");
    assert!(s.bytes <= s.budget);
    assert_eq!(cache.forget("a"), 0, "a was evicted");
    assert_eq!(cache.forget("b"), 1);
}

#[test]
fn averaging_identical_references_equals_one_reference() {
    let model = common::load("tiny-sd1");
    let one = ReferenceSettings {
        strength: 1.0,
        ..Default::default()
    };
    let avg = ReferenceSettings {
        combine: Combine::Average,
        ..one
    };
    let single = run(
        &model,
        &request(&model, "a cat", 3, Some(reference(vec![stripes(64, 64)], one))),
    );
    let twice = run(
        &model,
        &request(
            &model,
            "a cat",
            3,
            Some(reference(vec![stripes(64, 64), stripes(64, 64)], avg)),
        ),
    );
    assert_eq!(mean_abs_diff(&single[0], &twice[0]), 0.0);
    let concat = run(
        &model,
        &request(
            &model,
            "a cat",
            3,
            Some(reference(vec![stripes(64, 64), test_image(64, 64)], one)),
        ),
    );
    assert!(mean_abs_diff(&single[0], &concat[0]) > 0.1);
}

#[test]
fn every_family_and_inpainting_take_references_of_any_shape() {
    for name in ["tiny-sd2-v", "tiny-sdxl", "tiny-inpaint"] {
        let model = load(name);
        let mut req = request(
            &model,
            "a cat",
            1,
            Some(reference(
                vec![stripes(200, 90), test_image(30, 70)],
                Default::default(),
            )),
        );
        req.size = nanoimg_core::ImageSize::new(64, 96);
        if model.info().inpainting {
            req.init = Some(nanoimg_engine::InitImage {
                image: test_image(64, 96),
                strength: 1.0,
                mask: None,
            });
        }
        let out = run(&model, &req);
        assert_eq!(out[0].dimensions(), (64, 96), "{name}");
    }
}

#[test]
fn bad_references_are_refused_by_parameter() {
    let model = load("tiny-sd1");
    let check = |r: Reference, param: &str| {
        let req = request(&model, "a cat", 1, Some(Arc::new(r)));
        match model.generate(&req, &Limits::default(), &NoProgress, &CancelToken::new()) {
            Err(EngineError::InvalidParam(p)) => assert_eq!(p.param, param, "{p}"),
            other => panic!("expected {param} refused, got {:?}", other.map(|v| v.len())),
        }
    };
    let base = (*reference(vec![stripes(64, 64)], Default::default())).clone();
    check(
        Reference {
            images: vec![],
            ..base.clone()
        },
        "references",
    );
    check(
        Reference {
            images: vec![stripes(8, 8); 9],
            ..base.clone()
        },
        "references",
    );
    check(
        Reference {
            images: vec![image::RgbImage::new(0, 5)],
            ..base.clone()
        },
        "references",
    );
    check(
        Reference {
            images: vec![image::RgbImage::new(5000, 5000)],
            ..base.clone()
        },
        "references",
    );
    for (field, param) in [
        (0, "character_strength"),
        (1, "style_fidelity"),
        (2, "reference_attention"),
        (3, "reference_adain"),
    ] {
        let mut s = ReferenceSettings::default();
        match field {
            0 => s.strength = 1.5,
            1 => s.style_fidelity = -0.1,
            2 => s.attention = f64::NAN,
            _ => s.adain = 2.0,
        }
        check(
            Reference {
                settings: s,
                ..base.clone()
            },
            param,
        );
    }
    struct Nothing;
    impl UNetHooks for Nothing {}
    let mut req = request(&model, "a cat", 1, Some(Arc::new(base)));
    req.hooks = Some(Arc::new(Nothing));
    let err = model
        .generate(&req, &Limits::default(), &NoProgress, &CancelToken::new())
        .unwrap_err();
    assert!(err.to_string().contains("cannot be combined"), "{err}");
}
