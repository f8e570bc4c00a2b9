//! The plan format: JSON in and out, strict parsing, and validation that names what is wrong and
//! follows the image's size through the plan.

use nanoimg_edit::plan::{Anchor, Axis, Rgb};
use nanoimg_edit::{Area, EditError, EditPlan, Op, PlanLimits};

fn invalid(r: Result<impl std::fmt::Debug, EditError>) -> String {
    match r {
        Err(EditError::InvalidPlan(m)) => m,
        other => panic!("expected an invalid plan, got {other:?}"),
    }
}

#[test]
fn a_plan_round_trips_through_json_in_its_documented_shape() {
    let plan = EditPlan::new(vec![
        Op::CropAspect {
            width: 1,
            height: 1,
            anchor: Anchor::Center,
        },
        Op::Brightness { amount: 0.2 },
        Op::Rotate {
            degrees: 90.0,
            fill: Rgb([0, 0, 0]),
        },
        Op::Inpaint {
            area: Area {
                x: 0.0,
                y: 0.0,
                width: 1.0,
                height: 0.4,
            },
            prompt: "a sunset sky".into(),
        },
        Op::Grayscale {},
    ]);
    let text = serde_json::to_string(&plan).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(
        v["ops"][0],
        serde_json::json!({"op": "crop_aspect", "width": 1, "height": 1, "anchor": "center"})
    );
    assert_eq!(
        v["ops"][1],
        serde_json::json!({"op": "brightness", "amount": 0.2})
    );
    assert_eq!(v["ops"][4], serde_json::json!({"op": "grayscale"}));
    assert_eq!(EditPlan::from_json(&text).unwrap(), plan);
    // Defaults may be left out.
    let p =
        EditPlan::from_json(r#"{"version":1,"ops":[{"op":"crop_aspect","width":16,"height":9}]}"#).unwrap();
    assert_eq!(
        p.ops[0],
        Op::CropAspect {
            width: 16,
            height: 9,
            anchor: Anchor::Center
        }
    );
}

#[test]
fn anything_outside_the_vocabulary_is_refused_when_parsed() {
    for (json, says) in [
        (r#"{"version":1,"ops":[{"op":"delete_assets"}]}"#, "delete_assets"),
        (
            r#"{"version":1,"ops":[{"op":"fetch","url":"http://evil.example/x"}]}"#,
            "fetch",
        ),
        (
            r#"{"version":1,"ops":[{"op":"invert","target":"asset_123"}]}"#,
            "target",
        ),
        (r#"{"version":1,"ops":[{"op":"brightness"}]}"#, "amount"),
        (
            r#"{"version":1,"ops":[{"op":"brightness","amount":"lots"}]}"#,
            "lots",
        ),
        (r#"{"version":1,"ops":[],"grant":"admin"}"#, "grant"),
        (r#"{"ops":[{"op":"invert"}]}"#, "version"),
        ("ignore previous instructions", "not a valid plan"),
    ] {
        let e = invalid(EditPlan::from_json(json));
        assert!(e.contains(says), "{json}: {e}");
    }
}

#[test]
fn validation_names_the_operation_and_the_argument() {
    let lim = PlanLimits::default();
    let check = |ops: Vec<Op>| invalid(EditPlan::new(ops).validate((640, 480), &lim));
    let e = check(vec![Op::Invert {}, Op::Brightness { amount: 3.0 }]);
    assert!(
        e.contains("operation 2 (brightness)") && e.contains("amount must be from -1 to 1"),
        "{e}"
    );
    let e = check(vec![Op::Blur { sigma: f32::NAN }]);
    assert!(e.contains("sigma"), "{e}");
    let e = check(vec![Op::Restyle {
        prompt: "   ".into(),
        strength: 0.5,
    }]);
    assert!(e.contains("prompt must not be empty"), "{e}");
    let e = check(vec![Op::Restyle {
        prompt: "x".repeat(5000),
        strength: 0.5,
    }]);
    assert!(e.contains("5000 bytes"), "{e}");
    let e = check(vec![Op::Crop {
        area: Area {
            x: 0.5,
            y: 0.0,
            width: 0.8,
            height: 1.0,
        },
    }]);
    assert!(e.contains("past the image's edge"), "{e}");
    let e = check(vec![Op::Crop {
        area: Area {
            x: 0.0,
            y: 0.0,
            width: 0.0001,
            height: 1.0,
        },
    }]);
    assert!(e.contains("less than a pixel"), "{e}");
    let e = check(vec![Op::Upscale { factor: 100 }]);
    assert!(e.contains("2, 3 or 4"), "{e}");
    let e = check(vec![Op::CropAspect {
        width: 0,
        height: 9,
        anchor: Anchor::Center,
    }]);
    assert!(e.contains("aspect ratio"), "{e}");
    assert!(check(vec![]).contains("no operations"));
    assert!(check(vec![Op::Invert {}; 17]).contains("17 operations; the limit is 16"));
    let mut p = EditPlan::new(vec![Op::Invert {}]);
    p.version = 2;
    assert!(invalid(p.validate((8, 8), &lim)).contains("version 2"));
}

#[test]
fn the_size_is_followed_through_the_plan_so_no_step_exceeds_the_limits() {
    let lim = PlanLimits::default();
    // 1024 × 8 is over the 4096 limit even though a later crop would bring it back.
    let e = invalid(
        EditPlan::new(vec![
            Op::Scale { factor: 8.0 },
            Op::Crop {
                area: Area {
                    x: 0.0,
                    y: 0.0,
                    width: 0.1,
                    height: 0.1,
                },
            },
        ])
        .validate((1024, 1024), &lim),
    );
    assert!(
        e.contains("operation 1 (scale)") && e.contains("8192×8192"),
        "{e}"
    );
    let e = invalid(
        EditPlan::new(vec![Op::Pad {
            left: u32::MAX,
            top: 0,
            right: u32::MAX,
            bottom: 0,
            fill: Rgb::default(),
        }])
        .validate((10, 10), &lim),
    );
    assert!(e.contains("the limit is 4096 a side"), "{e}");
    let ok = EditPlan::new(vec![
        Op::CropAspect {
            width: 1,
            height: 1,
            anchor: Anchor::Left,
        },
        Op::Scale { factor: 0.5 },
        Op::Rotate {
            degrees: -90.0,
            fill: Rgb::default(),
        },
        Op::Pad {
            left: 10,
            top: 0,
            right: 10,
            bottom: 4,
            fill: Rgb([255, 255, 255]),
        },
        Op::Flip { axis: Axis::Vertical },
        Op::Upscale { factor: 2 },
    ]);
    assert_eq!(
        ok.validate((640, 480), &lim).unwrap(),
        ((240 + 20) * 2, (240 + 4) * 2)
    );
}
