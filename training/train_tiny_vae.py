#!/usr/bin/env python3
"""Distils a tiny autoencoder for the bundled model, as TAESD is distilled from SD's VAE.

The student is diffusers' `AutoencoderTiny` (three levels, 1/4 scale like the bundled VAE, no
normalisation, ReLUs): it reads and writes the latents the UNet works in (the bundled VAE's
scaled posterior means), so it can stand in for the full VAE when a request asks for
`vae: tiny` and it draws the step previews. Targets come from the teacher only:

  - encoder: the teacher's scaled posterior mean of each training image (MSE);
  - decoder: the teacher's decode of those latents (L1 + MSE), on the latents and on
    noisy / mixed latents like a sampler's intermediate estimates, so the previews are fair.

Held-out images (split == "heldout") are never seen; the script ends by measuring the quality
cost on them (PSNR of tiny vs full decode, and of each against the original pictures) and
writes it to --report.

    python training/train_tiny_vae.py --data data/emoji --out models/nanoimg-emoji/vae_tiny
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny
from PIL import Image


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def load_images(data: Path, split: str) -> torch.Tensor:
    rows = [json.loads(line) for line in open(data / "captions.jsonl")]
    rows = [r for r in rows if r["split"] == split]
    arr = np.stack([np.asarray(Image.open(data / r["file"]).convert("RGB")) for r in rows])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def student_config(width: int) -> dict:
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        encoder_block_out_channels=(width,) * 3, decoder_block_out_channels=(width,) * 3,
        num_encoder_blocks=(1, 2, 2), num_decoder_blocks=(2, 2, 1),
        act_fn="relu", upsample_fn="nearest", upsampling_scaling_factor=2,
        latent_magnitude=3, latent_shift=0.5, scaling_factor=1.0, force_upcast=False,
    )


@torch.no_grad()
def teacher_targets(vae: AutoencoderKL, images: torch.Tensor, batch: int = 256):
    """(scaled latents, teacher decodes) of every image."""
    sf = vae.config.scaling_factor
    zs, decs = [], []
    for i in range(0, len(images), batch):
        z = vae.encode(images[i:i + batch]).latent_dist.mean * sf
        zs.append(z)
        decs.append(vae.decode(z / sf).sample.clamp(-1, 1))
    return torch.cat(zs), torch.cat(decs)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) over images in [-1, 1], measured on 8-bit pixels."""
    qa = ((a.clamp(-1, 1) + 1) * 127.5).round()
    qb = ((b.clamp(-1, 1) + 1) * 127.5).round()
    mse = ((qa - qb) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--teacher", default="models/nanoimg-emoji/vae")
    ap.add_argument("--out", default="models/nanoimg-emoji/vae_tiny")
    ap.add_argument("--report", default="data/train/tiny-vae-quality.json")
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = Path(args.data)

    teacher = AutoencoderKL.from_pretrained(args.teacher, torch_dtype=torch.float32).eval()
    train = load_images(data, "train")
    held = load_images(data, "heldout")
    log(f"{len(train)} training and {len(held)} held-out images; teacher targets…")
    z_train, dec_train = teacher_targets(teacher, train)
    z_held, dec_held = teacher_targets(teacher, held)
    log(f"latents std {float(z_train.std()):.3f}")

    student = AutoencoderTiny(**student_config(args.width))
    params = sum(p.numel() for p in student.parameters())
    log(f"student: {params} parameters, width {args.width}")
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    sf = teacher.config.scaling_factor
    t0 = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train), (args.batch,))
        x, z, dec = train[idx], z_train[idx], dec_train[idx]
        # Half the decoder batch: a sampler's estimates — latents with some noise or mixed with
        # another image's — decoded by the teacher.
        k = args.batch // 2
        with torch.no_grad():
            other = z_train[torch.randint(0, len(train), (k,))]
            mix = torch.rand(k, 1, 1, 1) * 0.5
            noise = torch.randn_like(z[:k]) * torch.rand(k, 1, 1, 1) * 0.5
            z_aug = (1 - mix) * z[:k] + mix * other + noise
            dec_aug = teacher.decode(z_aug / sf).sample.clamp(-1, 1)
        z_in = torch.cat([z_aug, z[k:]])
        target = torch.cat([dec_aug, dec[k:]])
        out = student.decode(z_in).sample
        loss_dec = F.l1_loss(out, target) + F.mse_loss(out, target)
        loss_enc = F.mse_loss(student.encode(x).latents, z)
        loss = loss_dec + loss_enc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == 1:
            log(f"step {step}/{args.steps} decoder {float(loss_dec):.4f} encoder {float(loss_enc):.4f} "
                f"({(time.time() - t0) / step:.2f} s/step)")

    student.eval()
    with torch.no_grad():
        tiny_dec = torch.cat([student.decode(z_held[i:i + 256]).sample for i in range(0, len(held), 256)])
        tiny_z = torch.cat([student.encode(held[i:i + 256]).latents for i in range(0, len(held), 256)])
        round_trip = torch.cat([student.decode(tiny_z[i:i + 256]).sample for i in range(0, len(held), 256)])
    report = {
        "held_out_images": len(held),
        "student_parameters": params,
        "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
        "psnr_db": {
            "tiny_decode_vs_full_decode": psnr(tiny_dec, dec_held),
            "full_round_trip_vs_original": psnr(dec_held, held),
            "tiny_decode_of_full_latents_vs_original": psnr(tiny_dec, held),
            "tiny_round_trip_vs_original": psnr(round_trip, held),
        },
        "encoder_latent_rmse": float(((tiny_z - z_held) ** 2).mean().sqrt()),
        "latent_std": float(z_held.std()),
        "settings": vars(args),
    }
    log(json.dumps(report, indent=1))
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    student.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    log(f"saved {args.out}")


if __name__ == "__main__":
    main()
