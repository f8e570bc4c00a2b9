#!/usr/bin/env python3
"""Times the operations `nanoimg bench` times, with PyTorch + diffusers, or with OpenVINO, on
the CPU.

Same architectures (hand-written configs matching NanoImg's `sd-turbo` and `sd15` synthetic
specs), random weights, f32, the same thread count, median of N runs after one warm-up, and peak
RSS measured the same way (Linux VmHWM, reset through /proc/self/clear_refs after the warm-up).

`--backend openvino` exports the same PyTorch modules (the same seeded random weights) to
OpenVINO's IR with `openvino.convert_model`, in a child process, and times them compiled for the
CPU plugin in f32 in a process that loads only OpenVINO and NumPy, as FastSD CPU runs its
exported models (optimum-intel's export goes through the same converter). Its peak RSS is
therefore OpenVINO's alone.

`--backend openvino-int8` is the same with the UNet quantized to int8 by NNCF
(`nncf.quantize`, weights and activations, transformer preset, calibrated on the example
inputs: the ranges do not change the timing), the peer of `nanoimg bench --quantize int8`; the
text encoder and the decoder stay f32, as ours do.

    bench/setup_reference.sh
    .venv-bench/bin/python bench/diffusers_reference.py --threads 2 --runs 3
    .venv-bench/bin/python bench/diffusers_reference.py --backend openvino --threads 2 --runs 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

UNET_SD15 = dict(
    in_channels=4, out_channels=4, sample_size=64,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    layers_per_block=2, attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32,
)
UNET_SD_TURBO = dict(UNET_SD15, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                     use_linear_projection=True)
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2, norm_num_groups=32, scaling_factor=0.18215,
)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
CLIP_H = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
              num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu")
# SDXS-512 as its paper describes it (NanoImg's `sdxs-512` spec): SD 2.1-base's UNet without the
# middle block, the lowest-resolution stage and the top stage's transformers.
UNET_SDXS = dict(UNET_SD_TURBO, block_out_channels=[320, 640, 1280],
                 down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
                 up_block_types=["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"],
                 attention_head_dim=[5, 10, 20], mid_block_type=None)
ARCHS = {"sd-turbo": (UNET_SD_TURBO, CLIP_H), "sd15": (UNET_SD15, CLIP_L),
         "sdxs-512": (UNET_SDXS, CLIP_H)}
CONTEXT = {"sd-turbo": 1024, "sd15": 768, "sdxs-512": 1024}


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def timed(runs, fn):
    fn()
    reset_peak_rss()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, peak_rss_mib()


def modules(arch, names):
    """The PyTorch modules `names` of `arch` (seeded random weights), each as (module, forward
    with positional tensors returning one tensor)."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet_cfg, clip_cfg = ARCHS[arch]
    # Built in a fixed order so that every process draws the same weights.
    built = {
        "clip": (CLIPTextModel(CLIPTextConfig(**clip_cfg)).eval(), lambda m, ids: m(ids).last_hidden_state),
        "unet": (UNet2DConditionModel(**unet_cfg).eval(), lambda m, x, t, c: m(x, t, c).sample),
        "vae": (AutoencoderKL(**VAE).eval(), lambda m, z: m.decode(z).sample),
        # TAESD's architecture (AutoencoderTiny's defaults).
        "vae-tiny": (AutoencoderTiny().eval(), lambda m, z: m.decode(z).sample),
    }
    return {n: built[n] for n in names}


def inputs(arch, lat, batch=1):
    """Example inputs, as NumPy arrays: token ids, latents, timesteps, context."""
    rng = np.random.default_rng(0)
    return {
        "ids": rng.integers(0, 49406, (1, 77), dtype=np.int64),
        "x": rng.standard_normal((batch, 4, lat, lat), dtype=np.float32),
        "t": np.full((batch,), 999.0, dtype=np.float32),
        "c": rng.standard_normal((batch, 77, CONTEXT[arch]), dtype=np.float32),
    }


def needed(ops):
    """(module name, batch) pairs the operations run."""
    out = set()
    for op in ops:
        if op == "clip":
            out.add(("clip", 1))
        elif op in ("unet", "unet-cfg"):
            out.add(("unet", 1 if op == "unet" else 2))
        elif op in ("vae", "vae-tiny"):
            out.add((op, 1))
        elif op == "generate-tiny":
            out |= {("clip", 1), ("unet", 1), ("vae-tiny", 1)}
        else:
            raise SystemExit(f"unknown op {op}")
    return sorted(out)


def example(name, arch, lat, batch):
    i = inputs(arch, lat, batch)
    return {"clip": (i["ids"],), "unet": (i["x"], i["t"], i["c"]),
            "vae": (i["x"],), "vae-tiny": (i["x"],)}[name]


def ir_path(work, arch, lat, name, batch):
    return os.path.join(work, f"{arch}-{lat * 8}-{name}-b{batch}.xml")


def int8_path(path):
    return path.replace(".xml", "-int8.xml")


def quantize_unets(args):
    """Child process: int8 IR of the UNets the operations need (kept between runs)."""
    import nncf
    import openvino as ov

    lat = args.size // 8
    core = ov.Core()
    for arch in args.arch.split(","):
        for n, b in needed(args.ops.split(",")):
            path = ir_path(args.work_dir, arch, lat, n, b)
            if n != "unet" or os.path.exists(int8_path(path)):
                continue
            data = nncf.Dataset([list(example(n, arch, lat, b))])
            q = nncf.quantize(core.read_model(path), data, subset_size=1,
                              model_type=nncf.ModelType.TRANSFORMER, fast_bias_correction=True)
            ov.save_model(q, int8_path(path), compress_to_fp16=False)


def export(args):
    """Child process: writes the IR of every module the operations need (kept between runs)."""
    import openvino as ov
    import torch

    class Plain(torch.nn.Module):
        def __init__(self, inner, call):
            super().__init__()
            self.inner, self.call = inner, call

        def forward(self, *xs):
            return self.call(self.inner, *xs)

    lat = args.size // 8
    os.makedirs(args.work_dir, exist_ok=True)
    for arch in args.arch.split(","):
        todo = [(n, b) for n, b in needed(args.ops.split(","))
                if not os.path.exists(ir_path(args.work_dir, arch, lat, n, b))]
        if not todo:
            continue
        mods = modules(arch, ["clip", "unet", "vae", "vae-tiny"])
        with torch.inference_mode():
            for n, b in todo:
                m, call = mods[n]
                ex = tuple(torch.from_numpy(a) for a in example(n, arch, lat, b))
                ir = ov.convert_model(Plain(m, call).eval(), example_input=ex)
                ov.save_model(ir, ir_path(args.work_dir, arch, lat, n, b), compress_to_fp16=False)


def torch_runner(args, arch):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    mods = modules(arch, ["clip", "unet", "vae", "vae-tiny"])

    def runner(name, batch):
        m, call = mods[name]

        def run(*xs):
            with torch.inference_mode():
                return call(m, *(torch.from_numpy(x) for x in xs)).numpy()

        return run

    return runner


def openvino_runner(args, arch):
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if args.threads:
        cfg["INFERENCE_NUM_THREADS"] = args.threads
    lat = args.size // 8

    def runner(name, batch):
        path = ir_path(args.work_dir, arch, lat, name, batch)
        if args.backend == "openvino-int8" and name == "unet":
            path = int8_path(path)
        compiled = core.compile_model(path, "CPU", cfg)
        request = compiled.create_infer_request()

        def run(*xs):
            request.infer(list(xs))
            return request.get_output_tensor(0).data.copy()

        return run

    return runner


def version(backend, threads):
    if backend.startswith("openvino"):
        import openvino as ov

        return f"openvino {ov.__version__}, threads {threads}"
    import torch

    return (f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"mkldnn {torch.backends.mkldnn.is_available()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="sd-turbo,sd15")
    ap.add_argument("--ops", default="clip,unet,unet-cfg,vae")
    ap.add_argument("--backend", choices=["torch", "openvino", "openvino-int8"], default="torch")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=1, help="UNet steps of generate-tiny")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work-dir", default="target/bench-openvino", help="where the IR is kept")
    ap.add_argument("--export", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quantize", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export:
        return export(args)
    if args.quantize:
        return quantize_unets(args)
    if args.backend.startswith("openvino"):
        child = [sys.executable, __file__, "--arch", args.arch, "--ops", args.ops,
                 "--size", str(args.size), "--work-dir", args.work_dir]
        subprocess.run(child + ["--export"], check=True)
        if args.backend == "openvino-int8":
            subprocess.run(child + ["--quantize"], check=True)
    lat = args.size // 8
    threads = args.threads or os.cpu_count()
    print(f"# {version(args.backend, args.threads)}", flush=True)
    for arch in args.arch.split(","):
        ops = args.ops.split(",")
        make = (openvino_runner if args.backend.startswith("openvino") else torch_runner)(args, arch)
        run = {key: make(*key) for key in needed(ops)}
        for op in ops:
            if op == "clip":
                fn = lambda i=inputs(arch, lat): run["clip", 1](i["ids"])
            elif op in ("unet", "unet-cfg"):
                b = 1 if op == "unet" else 2
                fn = lambda i=inputs(arch, lat, b), b=b: run["unet", b](i["x"], i["t"], i["c"])
            elif op in ("vae", "vae-tiny"):
                fn = lambda i=inputs(arch, lat), op=op: run[op, 1](i["x"])
            else:
                # A whole SD-Turbo-style image: the prompt, `--steps` UNet calls without guidance
                # (Euler on the model's sigmas; the arithmetic is negligible) and the tiny decoder.
                def fn(i=inputs(arch, lat)):
                    c = run["clip", 1](i["ids"])
                    x = i["x"] * 14.6
                    for s in range(args.steps):
                        t = np.full((1,), 999.0 - s * 250, dtype=np.float32)
                        eps = run["unet", 1]((x / (14.6**2 + 1) ** 0.5).astype(np.float32), t, c)
                        x = x - eps * (14.6 / args.steps)
                    return run["vae-tiny", 1]((x / 0.18215).astype(np.float32))
            med, runs, peak = timed(args.runs, fn)
            print(json.dumps({"arch": arch, "op": op, "backend": args.backend, "size": args.size,
                              "steps": args.steps if op == "generate-tiny" else None,
                              "threads": threads, "median_s": med, "runs_s": runs,
                              "peak_rss_mib": peak}), flush=True)


if __name__ == "__main__":
    main()
