#!/usr/bin/env python3
"""Trains NanoImg's bundled emoji model and saves it as a diffusers folder.

Stages (each resumable from its output in --work):
  1. tokenizer  CLIP-style BPE on the training captions (training/bpe.py)
  2. vae        a tiny AutoencoderKL, 64×64×3 ↔ 16×16×4, L1 + tiny KL
  3. latents    every training image encoded once (mean and std of the posterior)
  4. unet       UNet2DConditionModel + CLIPTextModel from scratch on the latents: ε-prediction,
                min-SNR-5 loss weights, 10 % empty captions for classifier-free guidance,
                EMA of the weights
  5. export     f16 safetensors in diffusers layout + nanoimg.json → --out

Nothing here is NanoImg-specific at run time: the engine loads the result like any SD 1.x
folder. Held-out captions (split == "heldout") are never seen by any stage.

    python training/train.py --data data/emoji --work data/train --out models/nanoimg-emoji
"""

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

import bpe

MAX_TOKENS = 32
MERGES = 4000
BETA_START, BETA_END, TRAIN_STEPS = 0.00085, 0.012, 1000


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def load_rows(data: Path, split: str) -> list:
    rows = [json.loads(line) for line in open(data / "captions.jsonl")]
    return [r for r in rows if r["split"] == split]


def load_images(data: Path, rows: list) -> torch.Tensor:
    arr = np.stack([np.asarray(Image.open(data / r["file"]).convert("RGB")) for r in rows])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------- configs


def vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
                down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                block_out_channels=[16, 32, 64], layers_per_block=1, norm_num_groups=8)


def unet_config() -> dict:
    return dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                block_out_channels=[64, 128, 128], attention_head_dim=4, cross_attention_dim=256,
                norm_num_groups=32)


def text_config(vocab: dict) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(vocab), hidden_size=256, intermediate_size=1024,
                          num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
                          hidden_act="quick_gelu", bos_token_id=vocab[bpe.BOS], eos_token_id=vocab[bpe.EOS],
                          pad_token_id=vocab[bpe.EOS], projection_dim=256)


def scheduler_config() -> dict:
    return dict(num_train_timesteps=TRAIN_STEPS, beta_start=BETA_START, beta_end=BETA_END,
                beta_schedule="scaled_linear", prediction_type="epsilon", timestep_spacing="trailing",
                steps_offset=1)


# ---------------------------------------------------------------- stages


def stage_tokenizer(args) -> bpe.Tokenizer:
    dir = args.work / "tokenizer"
    if not (dir / "vocab.json").exists():
        captions = [r["caption"] for r in load_rows(args.data, "train")]
        vocab, merges = bpe.train(captions, MERGES)
        bpe.save(dir, vocab, merges, MAX_TOKENS)
        log(f"tokenizer: {len(vocab)} tokens, {len(merges)} merges")
    vocab = json.loads((dir / "vocab.json").read_text())
    merges = [tuple(l.split()) for l in (dir / "merges.txt").read_text().splitlines()[1:] if l]
    return bpe.Tokenizer(vocab, merges, MAX_TOKENS)


def cosine_lr(opt, step: int, total: int, peak: float, warmup: int):
    lr = peak * min(1.0, (step + 1) / warmup) * (0.5 + 0.5 * math.cos(math.pi * min(step, total) / total))
    for g in opt.param_groups:
        g["lr"] = max(lr, peak * 0.01)


def stage_vae(args, images: torch.Tensor) -> AutoencoderKL:
    dir = args.work / "vae"
    if (dir / "config.json").exists():
        return AutoencoderKL.from_pretrained(dir)
    torch.manual_seed(0)
    vae = AutoencoderKL(**vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    start = time.time()
    for step in range(args.vae_steps):
        cosine_lr(opt, step, args.vae_steps, args.vae_lr, 50)
        x = images[torch.randint(0, len(images), (args.vae_batch,))]
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        rec = (y - x).abs().mean()
        kl = post.kl().mean() / x[0].numel()
        loss = rec + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.vae_steps - 1:
            log(f"vae {step}/{args.vae_steps} L1 {rec.item():.4f} kl {kl.item():.2f} "
                f"({time.time() - start:.0f}s)")
    vae.save_pretrained(dir)
    (args.work / "vae_seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    return vae


@torch.no_grad()
def stage_latents(args, vae: AutoencoderKL, images: torch.Tensor) -> tuple:
    path = args.work / "latents.pt"
    if path.exists():
        return torch.load(path)
    vae.eval()
    means, stds = [], []
    for i in range(0, len(images), 128):
        d = vae.encode(images[i:i + 128]).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    mean, std = torch.cat(means), torch.cat(stds)
    scale = 1.0 / mean.std().item()
    rec = vae.decode(mean[:256]).sample
    l1 = (rec - images[:256]).abs().mean().item()
    log(f"latents {tuple(mean.shape)} scale {scale:.4f}; reconstruction L1 {l1:.4f} on [-1, 1]")
    torch.save((mean, std, scale, l1), path)
    return mean, std, scale, l1


def augment(caption: str, rng: random.Random) -> str:
    """Varies a caption the way prompts vary: fewer tags, other order, "a …", no style."""
    parts = caption.split(", ")
    label, tags = parts[0], parts[1:]
    style = tags.pop() if tags and tags[-1] in ("noto emoji", "twemoji") else None
    tags = [t for t in tags if rng.random() < 0.6]
    rng.shuffle(tags)
    if style and rng.random() < 0.7:
        tags.append(style)
    if rng.random() < 0.3:
        label = ("an " if label[:1] in "aeiou" else "a ") + label
    return ", ".join([label] + tags)


def sample_weights(rows: list) -> torch.Tensor:
    """Skin-tone variants are 60 % of the images; weigh each base emoji's variants down."""
    return torch.tensor([0.25 if "skin tone" in r["caption"] else 1.0 for r in rows])


class Diffusion:
    def __init__(self):
        betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, TRAIN_STEPS) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)


@torch.no_grad()
def sample(unet, text, tok, prompts: list, steps: int, guidance: float, seed: int) -> torch.Tensor:
    """Euler sampling with CFG — a preview only; the engine is the real sampler."""
    sched = EulerDiscreteScheduler(**scheduler_config())
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([tok(p) for p in prompts] + [tok("")] * len(prompts))
    ctx = text(ids).last_hidden_state
    x = torch.randn(len(prompts), 4, 16, 16, generator=g) * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        e = unet(inp, t, ctx).sample
        cond, uncond = e.chunk(2)
        x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return x


def save_grid(images: torch.Tensor, path: Path, cols: int):
    imgs = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    rows = math.ceil(len(imgs) / cols)
    grid = Image.new("RGB", (cols * 64, rows * 64), "white")
    for i, im in enumerate(imgs):
        grid.paste(Image.fromarray(im), ((i % cols) * 64, (i // cols) * 64))
    grid.save(path)


PREVIEW = ["a smiling cat face", "grinning face", "red apple", "pizza", "rocket", "dog face",
           "woman cook, medium skin tone", "flag: japan", "a cat face wearing sunglasses", "sun"]


def stage_unet(args, tok, lat, vae, rows):
    mean, std, scale, _ = lat
    dir = args.work / "unet-ckpt"
    torch.manual_seed(1)
    vocab = tok.vocab
    unet = UNet2DConditionModel(**unet_config())
    text = CLIPTextModel(text_config(vocab))
    step0 = 0
    if (dir / "state.pt").exists():
        st = torch.load(dir / "state.pt")
        unet.load_state_dict(st["unet"])
        text.load_state_dict(st["text"])
        step0 = st["step"]
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text)
    if step0:
        ema_unet.load_state_dict(st["ema_unet"])
        ema_text.load_state_dict(st["ema_text"])
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    if step0:
        opt.load_state_dict(st["opt"])
    log(f"unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M params, "
        f"text {sum(p.numel() for p in text.parameters()) / 1e6:.2f}M, from step {step0}")
    ac = Diffusion().alphas_cumprod
    snr = ac / (1 - ac)
    loss_w = torch.clamp(snr, max=5.0) / snr
    weights = sample_weights(rows)
    rng = random.Random(step0)
    start, last = time.time(), time.time()
    for step in range(step0, args.steps):
        cosine_lr(opt, step, args.steps, args.lr, 200)
        idx = torch.multinomial(weights, args.batch, replacement=True)
        x0 = (mean[idx] + std[idx] * torch.randn_like(mean[idx])) * scale
        caps = ["" if rng.random() < 0.1 else augment(rows[i]["caption"], rng) for i in idx.tolist()]
        ids = torch.tensor([tok(c) for c in caps])
        t = torch.randint(0, TRAIN_STEPS, (args.batch,))
        eps = torch.randn_like(x0)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        pred = unet(xt, t, text(ids).last_hidden_state).sample
        per = ((pred - eps) ** 2).mean(dim=(1, 2, 3))
        loss = (per * loss_w[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for m, e in ((unet, ema_unet), (text, ema_text)):
                for p, q in zip(m.parameters(), e.parameters()):
                    q.lerp_(p, 1 - decay)
        if step % 50 == 0:
            log(f"unet {step}/{args.steps} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"({(time.time() - last) / (50 if step > step0 else 1):.2f}s/step)")
            last = time.time()
        done = step + 1 == args.steps
        if (step + 1) % args.checkpoint_every == 0 or done:
            dir.mkdir(parents=True, exist_ok=True)
            torch.save(dict(unet=unet.state_dict(), text=text.state_dict(), ema_unet=ema_unet.state_dict(),
                            ema_text=ema_text.state_dict(), opt=opt.state_dict(), step=step + 1),
                       dir / "state.tmp")
            (dir / "state.tmp").replace(dir / "state.pt")
            z = sample(ema_unet.eval(), ema_text.eval(), tok, PREVIEW, 20, 5.0, 0)
            save_grid(vae.decode(z / scale).sample, args.work / f"preview-{step + 1:06}.png", 5)
            ema_unet.train(), ema_text.train()
            log(f"checkpoint {step + 1}")
    secs = time.time() - start
    with open(args.work / "unet_seconds.txt", "a") as f:
        f.write(f"{step0}->{args.steps} {secs:.0f}\n")
    return ema_unet.eval(), ema_text.eval()


def export(args, unet, text, vae, scale: float, tok_dir: Path):
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    vae = copy.deepcopy(vae)
    vae.register_to_config(scaling_factor=scale)
    for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        copy.deepcopy(m).to(torch.float16).save_pretrained(out / name, safe_serialization=True)
    tdir = out / "tokenizer"
    tdir.mkdir(exist_ok=True)
    for f in tok_dir.iterdir():
        (tdir / f.name).write_bytes(f.read_bytes())
    sdir = out / "scheduler"
    sdir.mkdir(exist_ok=True)
    EulerDiscreteScheduler(**scheduler_config()).save_pretrained(sdir)
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False}, indent=2))
    (out / "nanoimg.json").write_text(json.dumps({
        "family": "sd1", "steps": args.default_steps, "guidance": args.default_guidance,
        "scheduler": "euler", "size": "64x64",
        "description": "NanoImg's bundled demo model: 64×64 emoji from a text prompt (see MODEL_CARD.md)",
    }, indent=2) + "\n")
    log(f"exported to {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--work", type=Path, default=Path("data/train"))
    ap.add_argument("--out", type=Path, default=Path("models/nanoimg-emoji"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--vae-steps", type=int, default=800)
    ap.add_argument("--vae-batch", type=int, default=32)
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--default-steps", type=int, default=20)
    ap.add_argument("--default-guidance", type=float, default=5.0)
    ap.add_argument("--stop-after", choices=["tokenizer", "vae", "latents", "unet"], default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)

    tok = stage_tokenizer(args)
    if args.stop_after == "tokenizer":
        return
    rows = load_rows(args.data, "train")
    images = load_images(args.data, rows)
    log(f"{len(rows)} training images")
    vae = stage_vae(args, images).eval()
    if args.stop_after == "vae":
        return
    lat = stage_latents(args, vae, images)
    if args.stop_after == "latents":
        return
    del images
    unet, text = stage_unet(args, tok, lat, vae, rows)
    if args.stop_after == "unet":
        return
    export(args, unet, text, vae, lat[2], args.work / "tokenizer")


if __name__ == "__main__":
    main()
