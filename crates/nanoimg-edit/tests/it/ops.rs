//! The pixel operations: exact where exactness is defined (crops, right-angle turns, flips,
//! pads, identities), and measured where it is not (direction and size of a change).

use image::{Rgb, RgbImage};
use nanoimg_edit::plan::{Anchor, Axis, Place, Rgb as Fill};
use nanoimg_edit::{ops, Area, EditError, EditPlan, Op, PlanLimits};

/// A deterministic picture with gradients, edges and texture.
fn picture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 7 + y * 13) % 23) as u8;
        Rgb([
            (x * 255 / w.max(1)) as u8 ^ t,
            (y * 255 / h.max(1)) as u8,
            if (x / 8 + y / 8) % 2 == 0 { 40 } else { 200 },
        ])
    })
}

fn run(img: &RgbImage, op: Op) -> RgbImage {
    ops::apply(img, &op).unwrap()
}

fn mean(img: &RgbImage) -> f64 {
    img.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / img.as_raw().len() as f64
}

fn variance(img: &RgbImage) -> f64 {
    let m = mean(img);
    img.as_raw()
        .iter()
        .map(|&v| (f64::from(v) - m).powi(2))
        .sum::<f64>()
        / img.as_raw().len() as f64
}

#[test]
fn geometry_is_exact() {
    let img = picture(300, 200);
    // Crop by fractions: the same pixels as the sub-image.
    let c = run(
        &img,
        Op::Crop {
            area: Area {
                x: 0.1,
                y: 0.25,
                width: 0.5,
                height: 0.5,
            },
        },
    );
    assert_eq!(c.dimensions(), (150, 100));
    assert_eq!(c.get_pixel(0, 0), img.get_pixel(30, 50));
    assert_eq!(c.get_pixel(149, 99), img.get_pixel(179, 149));
    // The largest centred square, and anchored ones.
    let sq = run(
        &img,
        Op::CropAspect {
            width: 1,
            height: 1,
            anchor: Anchor::Center,
        },
    );
    assert_eq!(sq.dimensions(), (200, 200));
    assert_eq!(sq.get_pixel(0, 0), img.get_pixel(50, 0));
    let right = run(
        &img,
        Op::CropAspect {
            width: 1,
            height: 1,
            anchor: Anchor::Right,
        },
    );
    assert_eq!(right.get_pixel(199, 0), img.get_pixel(299, 0));
    let wide = run(
        &img,
        Op::CropAspect {
            width: 16,
            height: 9,
            anchor: Anchor::Center,
        },
    );
    assert_eq!(wide.dimensions(), (300, 168));
    // Right-angle turns move pixels exactly; four of them are the identity.
    let r = run(
        &img,
        Op::Rotate {
            degrees: 90.0,
            fill: Fill::default(),
        },
    );
    assert_eq!(r.dimensions(), (200, 300));
    assert_eq!(r.get_pixel(199, 0), img.get_pixel(0, 0), "clockwise");
    let back = run(
        &r,
        Op::Rotate {
            degrees: -90.0,
            fill: Fill::default(),
        },
    );
    assert_eq!(back, img);
    // Flips twice are the identity; once, mirrored.
    let f = run(
        &img,
        Op::Flip {
            axis: Axis::Horizontal,
        },
    );
    assert_eq!(f.get_pixel(0, 5), img.get_pixel(299, 5));
    assert_eq!(
        run(
            &f,
            Op::Flip {
                axis: Axis::Horizontal
            }
        ),
        img
    );
    // Padding places the picture and fills the rest.
    let p = run(
        &img,
        Op::Pad {
            left: 3,
            top: 4,
            right: 5,
            bottom: 6,
            fill: Fill([1, 2, 3]),
        },
    );
    assert_eq!(p.dimensions(), (308, 210));
    assert_eq!(p.get_pixel(0, 0), &Rgb([1, 2, 3]));
    assert_eq!(p.get_pixel(3, 4), img.get_pixel(0, 0));
    assert_eq!(p.get_pixel(307, 209), &Rgb([1, 2, 3]));
}

#[test]
fn resampling_and_arbitrary_rotation_keep_content() {
    let flat = RgbImage::from_pixel(97, 61, Rgb([10, 120, 230]));
    // A flat picture stays flat through Lanczos resampling, up or down.
    for (w, h) in [(40, 25), (300, 200)] {
        let r = run(&flat, Op::Resize { width: w, height: h });
        assert_eq!(r.dimensions(), (w, h));
        assert!(r.pixels().all(|p| p.0 == [10, 120, 230]), "{w}×{h}");
    }
    let s = run(&picture(100, 80), Op::Scale { factor: 0.5 });
    assert_eq!(s.dimensions(), (50, 40));
    // 45°: a bigger canvas, the corners filled, the centre from the picture.
    let img = picture(100, 100);
    let r = run(
        &img,
        Op::Rotate {
            degrees: 45.0,
            fill: Fill([255, 0, 255]),
        },
    );
    assert_eq!(r.dimensions(), (142, 142));
    assert_eq!(r.get_pixel(0, 0), &Rgb([255, 0, 255]));
    assert_ne!(r.get_pixel(71, 71), &Rgb([255, 0, 255]));
}

#[test]
fn tone_operations_move_levels_the_way_they_say() {
    let img = picture(64, 48);
    let grey = RgbImage::from_pixel(4, 4, Rgb([100, 100, 100]));
    // Identities.
    for op in [
        Op::Brightness { amount: 0.0 },
        Op::Contrast { amount: 0.0 },
        Op::Saturation { amount: 0.0 },
        Op::Temperature { amount: 0.0 },
        Op::Gamma { gamma: 1.0 },
        Op::Exposure { stops: 0.0 },
    ] {
        assert_eq!(run(&img, op.clone()), img, "{op:?}");
    }
    let hue0 = run(&img, Op::Hue { degrees: 0.0 });
    assert!(hue0
        .as_raw()
        .iter()
        .zip(img.as_raw())
        .all(|(a, b)| a.abs_diff(*b) <= 1));
    assert_eq!(run(&run(&img, Op::Invert {}), Op::Invert {}), img);
    // Directions.
    assert_eq!(
        run(&grey, Op::Brightness { amount: 0.1 }).get_pixel(0, 0),
        &Rgb([126, 126, 126])
    );
    assert!(variance(&run(&img, Op::Contrast { amount: 0.5 })) > variance(&img));
    assert!(variance(&run(&img, Op::Contrast { amount: -0.5 })) < variance(&img));
    let g = run(&img, Op::Saturation { amount: -1.0 });
    assert!(g
        .pixels()
        .all(|p| p[0].abs_diff(p[1]) <= 1 && p[1].abs_diff(p[2]) <= 1));
    let gs = run(&img, Op::Grayscale {});
    assert!(gs.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    let warm = run(&grey, Op::Temperature { amount: 0.5 });
    assert!(warm.get_pixel(0, 0)[0] > 100 && warm.get_pixel(0, 0)[2] < 100);
    // Hue 120°: pure red becomes mostly green.
    let red = RgbImage::from_pixel(2, 2, Rgb([200, 0, 0]));
    let turned = run(&red, Op::Hue { degrees: 120.0 });
    let p = turned.get_pixel(0, 0);
    assert!(p[1] > p[0] && p[1] > p[2], "{p:?}");
    // One stop up doubles linear light: sRGB 100 (0.127 linear) → 0.254 linear ≈ sRGB 137.
    let up = run(&grey, Op::Exposure { stops: 1.0 });
    assert!(
        (136..=138).contains(&up.get_pixel(0, 0)[0]),
        "{:?}",
        up.get_pixel(0, 0)
    );
    assert!(mean(&run(&img, Op::Gamma { gamma: 2.0 })) > mean(&img));
    let sepia = run(&grey, Op::Sepia {});
    let s = sepia.get_pixel(0, 0);
    assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
}

#[test]
fn filters_smooth_sharpen_and_darken_corners() {
    let img = picture(80, 60);
    let flat = RgbImage::from_pixel(20, 20, Rgb([90, 90, 90]));
    assert_eq!(run(&flat, Op::Blur { sigma: 3.0 }), flat);
    assert!(variance(&run(&img, Op::Blur { sigma: 2.0 })) < variance(&img));
    assert!(variance(&run(&img, Op::Sharpen { amount: 1.0 })) > variance(&img));
    let v = run(
        &RgbImage::from_pixel(101, 101, Rgb([200, 200, 200])),
        Op::Vignette { strength: 0.8 },
    );
    assert_eq!(v.get_pixel(50, 50), &Rgb([200, 200, 200]));
    assert!(v.get_pixel(0, 0)[0] < 80, "{:?}", v.get_pixel(0, 0));
}

#[test]
fn every_pixel_operation_ends_at_the_size_validation_predicted() {
    let img = picture(123, 77);
    let lim = PlanLimits::default();
    let area = Area {
        x: 0.2,
        y: 0.1,
        width: 0.33,
        height: 0.77,
    };
    let all = vec![
        Op::Crop { area },
        Op::CropAspect {
            width: 4,
            height: 3,
            anchor: Anchor::Bottom,
        },
        Op::Resize {
            width: 31,
            height: 200,
        },
        Op::Scale { factor: 1.37 },
        Op::Rotate {
            degrees: 33.0,
            fill: Fill::default(),
        },
        Op::Rotate {
            degrees: 270.0,
            fill: Fill::default(),
        },
        Op::Flip { axis: Axis::Vertical },
        Op::Pad {
            left: 1,
            top: 2,
            right: 3,
            bottom: 4,
            fill: Fill::default(),
        },
        Op::Brightness { amount: -0.3 },
        Op::Contrast { amount: 0.3 },
        Op::Saturation { amount: 0.6 },
        Op::Temperature { amount: -0.4 },
        Op::Hue { degrees: -45.0 },
        Op::Gamma { gamma: 0.7 },
        Op::Exposure { stops: -1.5 },
        Op::Grayscale {},
        Op::Sepia {},
        Op::Invert {},
        Op::Blur { sigma: 1.2 },
        Op::Sharpen { amount: 0.8 },
        Op::Vignette { strength: 0.5 },
    ];
    for op in all {
        let want = EditPlan::new(vec![op.clone()])
            .validate(img.dimensions(), &lim)
            .unwrap();
        assert_eq!(run(&img, op.clone()).dimensions(), want, "{op:?}");
    }
}

#[test]
fn generative_operations_are_not_pixel_operations() {
    let e = ops::apply(&picture(8, 8), &Op::Variation { strength: 0.5 }).unwrap_err();
    assert_eq!(e, EditError::NeedsEngine("variation"));
}

/// A caption draws in its band only, in its colour with a contrasting outline, centred; a long
/// one is wrapped (and shrunk) to fit inside the margin.
#[test]
fn captions_draw_in_their_band_and_fit_the_width() {
    let grey = RgbImage::from_pixel(200, 100, Rgb([128, 128, 128]));
    let changed = |a: &RgbImage, b: &RgbImage| -> Vec<(u32, u32)> {
        a.enumerate_pixels()
            .filter(|(x, y, p)| *p != b.get_pixel(*x, *y))
            .map(|(x, y, _)| (x, y))
            .collect()
    };
    let cap = |text: &str, place: Place| Op::Caption {
        text: text.into(),
        place,
        size: 0.2,
        color: Fill([255, 255, 0]),
    };
    let bottom = ops::apply(&grey, &cap("Hello", Place::Bottom)).unwrap();
    let px = changed(&bottom, &grey);
    assert!(px.len() > 100, "{}", px.len());
    assert!(
        px.iter().all(|&(_, y)| y >= 70),
        "the bottom caption left its band"
    );
    assert!(bottom.pixels().any(|p| *p == Rgb([255, 255, 0])));
    assert!(bottom.pixels().any(|p| *p == Rgb([0, 0, 0])), "no outline");
    // Centred: as much ink left of the middle as right of it, within a glyph's width.
    let (l, r) = px.iter().fold(
        (0, 0),
        |(l, r), &(x, _)| if x < 100 { (l + 1, r) } else { (l, r + 1) },
    );
    assert!((l as f64 / r as f64 - 1.0).abs() < 0.35, "{l} vs {r}");
    let top = ops::apply(&grey, &cap("Hello", Place::Top)).unwrap();
    assert!(changed(&top, &grey).iter().all(|&(_, y)| y < 30));
    // A long text stays inside the 4 % margin, on several lines.
    let long = ops::apply(&grey, &cap(&"wide words ".repeat(12), Place::Center)).unwrap();
    let px = changed(&long, &grey);
    let (lo, hi) = px
        .iter()
        .fold((u32::MAX, 0), |(lo, hi), &(x, _)| (lo.min(x), hi.max(x)));
    assert!(
        lo >= 3 && hi < 197,
        "the caption ran off the side: x from {lo} to {hi}"
    );
    let rows: std::collections::BTreeSet<u32> = px.iter().map(|&(_, y)| y).collect();
    assert!(rows.len() > 40, "one line only? {} rows", rows.len());
    // Deterministic.
    assert_eq!(ops::apply(&grey, &cap("Hello", Place::Bottom)).unwrap(), bottom);
}
