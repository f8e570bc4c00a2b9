//! The plan format: JSON in and out, strict parsing, and validation that names what is wrong and
//! follows the image's size through the plan.

use nanoimg_edit::plan::{Anchor, Axis, Place, Rgb};
use nanoimg_edit::{Area, EditError, EditPlan, Op, OpError, PlanLimits};

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

/// The published JSON Schema (`schema/edit-plan.schema.json`) says what the parser accepts:
/// every operation, with exactly its fields, the required ones marked, and the numeric bounds
/// that validation enforces.
#[test]
fn the_published_schema_matches_the_plan_types() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../schema/edit-plan.schema.json")).unwrap();
    let branches = schema["$defs"]["op"]["oneOf"].as_array().unwrap();
    let area = Area {
        x: 0.0,
        y: 0.0,
        width: 1.0,
        height: 0.5,
    };
    // One of every operation, with every field written out.
    let all = vec![
        Op::Crop { area },
        Op::CropAspect {
            width: 1,
            height: 1,
            anchor: Anchor::Top,
        },
        Op::Resize { width: 8, height: 8 },
        Op::Scale { factor: 0.5 },
        Op::Rotate {
            degrees: 10.0,
            fill: Rgb([1, 2, 3]),
        },
        Op::Flip { axis: Axis::Vertical },
        Op::Pad {
            left: 1,
            top: 1,
            right: 1,
            bottom: 1,
            fill: Rgb::default(),
        },
        Op::Brightness { amount: 0.1 },
        Op::Contrast { amount: 0.1 },
        Op::Saturation { amount: 0.1 },
        Op::Temperature { amount: 0.1 },
        Op::Hue { degrees: 10.0 },
        Op::Gamma { gamma: 1.1 },
        Op::Exposure { stops: 0.5 },
        Op::Grayscale {},
        Op::Sepia {},
        Op::Invert {},
        Op::Blur { sigma: 1.0 },
        Op::Sharpen { amount: 1.0 },
        Op::Vignette { strength: 0.5 },
        Op::Caption {
            text: "t".into(),
            place: Place::Top,
            size: 0.1,
            color: Rgb([1, 2, 3]),
        },
        Op::Restyle {
            prompt: "p".into(),
            strength: 0.5,
        },
        Op::Inpaint {
            area,
            prompt: "p".into(),
        },
        Op::Outpaint {
            left: 1,
            top: 0,
            right: 0,
            bottom: 0,
            prompt: "p".into(),
        },
        Op::Variation { strength: 0.5 },
        Op::Instruct {
            instruction: "i".into(),
        },
        Op::Upscale { factor: 2 },
    ];
    assert_eq!(
        branches.len(),
        all.len(),
        "an operation is missing from the schema or the test"
    );
    for op in &all {
        let v = serde_json::to_value(op).unwrap();
        let name = v["op"].as_str().unwrap();
        let b = branches
            .iter()
            .find(|b| b["properties"]["op"]["const"] == name)
            .unwrap_or_else(|| panic!("no schema branch for {name}"));
        let mut want: Vec<&String> = b["properties"].as_object().unwrap().keys().collect();
        let mut got: Vec<&String> = v.as_object().unwrap().keys().collect();
        want.sort();
        got.sort();
        assert_eq!(want, got, "{name}: fields");
        assert_eq!(b["additionalProperties"], false, "{name}");
        // Every field without a serde default is required.
        for k in b["required"].as_array().unwrap() {
            let mut without = v.clone();
            without.as_object_mut().unwrap().remove(k.as_str().unwrap());
            assert!(
                serde_json::from_value::<Op>(without).is_err(),
                "{name}: `{k}` is marked required but the parser does without it"
            );
        }
        // Numeric bounds in the schema are the ones validation uses: the bounds pass, a step
        // beyond fails.
        for (field, s) in b["properties"].as_object().unwrap() {
            let (Some(lo), Some(hi)) = (s["minimum"].as_f64(), s["maximum"].as_f64()) else {
                continue;
            };
            if s["type"] != "number" {
                continue;
            }
            for (x, ok) in [(lo, true), (hi, true), (hi + 1.0, false), (lo - 1.0, false)] {
                let mut t = v.clone();
                t[field] = serde_json::json!(x);
                let op: Op = serde_json::from_value(t).unwrap();
                let r = op.check((512, 512), &PlanLimits::default());
                match r {
                    Ok(_) => assert!(ok, "{name}.{field} = {x} was accepted"),
                    Err(OpError::OutOfRange { arg, .. }) if !ok => assert_eq!(arg, field, "{name} = {x}"),
                    Err(e) => panic!("{name}.{field} = {x}: {e:?}"),
                }
            }
        }
    }
}
