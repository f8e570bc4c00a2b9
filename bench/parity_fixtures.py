#!/usr/bin/env python3
"""Reference outputs from diffusers/transformers for NanoImg's tiny synthetic models.

NanoImg writes tiny random-weight models in diffusers layout (`nanoimg models synth`). This script
loads the same folders with the reference implementations (diffusers' UNet2DConditionModel and
AutoencoderKL, transformers' CLIPTextModel / CLIPTextModelWithProjection and CLIPTokenizer), runs
them on fixed inputs, and saves inputs and outputs to small safetensors files. The Rust test
`crates/nanoimg-engine/tests/parity.rs` regenerates the same models from the same seed and checks
that our code gives the same numbers. CI does not need PyTorch: only this script does.

    bench/setup_reference.sh                       # PyTorch + diffusers in .venv-bench
    for a in tiny-sd1 tiny-sd2 tiny-sdxl tiny-sdxl-refiner tiny-inpaint tiny-lcm tiny-sdxs; do
        nanoimg models synth --arch $a --seed 7 /tmp/parity/$a
    done
    .venv-bench/bin/python bench/parity_fixtures.py /tmp/parity crates/nanoimg-engine/tests/fixtures

The bundled model (models/nanoimg-emoji, f16 weights, computed in f32 on both sides) is checked
the same way: put a link to it in the source folder (`ln -s $PWD/models/nanoimg-emoji /tmp/parity/`).

The image embedders of `nanoimg character eval` too: a folder with a transformers `config.json`
of `model_type` dinov2 or clip gets `parity-<name>.safetensors` with transformers' outputs
(Dinov2Model; CLIPModel's projected image and text features) and its image processor's
pixel values for a fixed picture:

    nanoimg models synth --arch tiny-dinov2 --seed 7 /tmp/parity/tiny-dinov2
    nanoimg models synth --arch tiny-clip --seed 7 /tmp/parity/tiny-clip

The consistency samplers (diffusers' LCMScheduler and TCDScheduler, no model: a stand-in
denoiser and recorded noise) go to parity-schedulers.safetensors on every run. Flow matching
(FlowMatchEulerDiscreteScheduler as FluxPipeline drives it, a stand-in velocity) goes to
parity-flow.safetensors.

FLUX's T5 encoder (transformers' T5EncoderModel, v1.1's gated GELU):

    nanoimg models synth --arch tiny-t5 --seed 7 /tmp/parity/tiny-t5

its 16-channel VAE alone, and its transformer (diffusers' FluxTransformer2DModel):

    nanoimg models synth --arch tiny-flux-vae --seed 7 /tmp/parity/tiny-flux-vae

    nanoimg models synth --arch tiny-flux-transformer --seed 7 /tmp/parity/tiny-flux-transformer

Whole FLUX.1 pipelines (FluxPipeline, FluxKontextPipeline): the prompt's embeddings, two
sampling steps and the decoding:

    for a in tiny-flux tiny-flux-schnell tiny-kontext; do
        nanoimg models synth --arch $a --seed 7 /tmp/parity/$a
    done

The tiny autoencoder (diffusers' AutoencoderTiny, TAESD's architecture) both ways:

    nanoimg models synth --arch tiny-taesd --seed 7 /tmp/parity/tiny-taesd
"""

import json
import math
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

PROMPT = "a cat and a dog, 2 friends!"


def encode(model_dir: Path, enc: str, tok: str):
    tokenizer = CLIPTokenizer.from_pretrained(model_dir / tok)
    ids = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    cfg = json.loads((model_dir / enc / "config.json").read_text())
    cls = CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in cfg["architectures"] else CLIPTextModel
    model = cls.from_pretrained(model_dir / enc, torch_dtype=torch.float32).eval()
    out = model(ids, output_hidden_states=True)
    pooled = out.text_embeds if cls is CLIPTextModelWithProjection else out.pooler_output
    return ids, out.last_hidden_state, out.hidden_states[-2], pooled


@torch.no_grad()
def fixture(model_dir: Path) -> dict:
    torch.manual_seed(0)
    t = {}
    index = json.loads((model_dir / "model_index.json").read_text())
    sdxl = "text_encoder_2" in index
    # The SDXL refiner has SDXL's second text encoder only.
    refiner = index.get("requires_aesthetics_score", False)
    if not refiner:
        ids, last, penult, pooled = encode(model_dir, "text_encoder", "tokenizer")
        t.update(ids=ids.to(torch.int64), last_hidden_state=last, penultimate=penult, pooled=pooled)
    if sdxl:
        ids2, _, penult2, pooled2 = encode(model_dir, "text_encoder_2", "tokenizer_2")
        t.update(ids_2=ids2.to(torch.int64), penultimate_2=penult2, pooled_2=pooled2)
        context = penult2 if refiner else torch.cat([penult, penult2], dim=-1)
    else:
        context = last

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", torch_dtype=torch.float32).eval()
    c = unet.config
    sample = torch.randn(2, c.in_channels, 8, 8)
    timestep = torch.tensor([637.0, 21.0])
    ctx = context.repeat(2, 1, 1)
    kwargs = {}
    if sdxl:
        if refiner:  # size, crop corner, aesthetic score
            time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 2.5], [128.0, 96.0, 8.0, 4.0, 6.0]])
        else:  # size, crop corner, target size
            time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [128.0, 96.0, 8.0, 4.0, 64.0, 48.0]])
        text_embeds = pooled2.repeat(2, 1)
        kwargs["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
        t.update(time_ids=time_ids)
    if c.time_cond_proj_dim is not None:
        # An LCM UNet's guidance embedding, as LatentConsistencyModelPipeline computes it (it
        # passes guidance_scale - 1 as w).
        from diffusers import LatentConsistencyModelPipeline

        w = torch.tensor([7.5, 2.0])
        kwargs["timestep_cond"] = LatentConsistencyModelPipeline.get_guidance_scale_embedding(
            None, w, embedding_dim=c.time_cond_proj_dim)
        t.update(guidance_w=w)
    t.update(sample=sample, timestep=timestep, unet_out=unet(sample, timestep, ctx, **kwargs).sample)

    latents = torch.randn(1, 4, 8, 8)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    t.update(latents=latents, image=image)
    # SDXS: a tiny autoencoder as `vae`, the full one (if any) as `vae_large`.
    tiny = index["vae"][1] == "AutoencoderTiny"
    kl_dir = model_dir / ("vae_large" if tiny else "vae")
    if kl_dir.is_dir():
        vae = AutoencoderKL.from_pretrained(kl_dir, torch_dtype=torch.float32).eval()
        t.update(
            # What the engine's decode computes: the scaling factor is undone first.
            decoded=vae.decode(latents / vae.config.scaling_factor).sample,
            encoded_mean=vae.encode(image).latent_dist.mean * vae.config.scaling_factor,
        )
    if tiny:
        from diffusers import AutoencoderTiny

        vae = AutoencoderTiny.from_pretrained(model_dir / "vae", torch_dtype=torch.float32).eval()
        t.update(tiny_decoded=vae.decode(latents).sample, tiny_encoded=vae.encode(image).latents)
    if sdxl:
        t.update(pipeline_conditioning(model_dir, refiner))
    return {k: v.contiguous() for k, v in t.items()}


class _Seen(Exception):
    pass


def pipeline_conditioning(model_dir: Path, refiner: bool) -> dict:
    """What diffusers' own SDXL pipeline hands its UNet on the first step of a guided run with
    no negative prompt at 64x48 (the refiner's: img2img, as it is meant to run): the
    context batch, the pooled embeddings and the time ids, negative row first. Captured with a
    forward pre-hook, so it is the pipeline's own conditioning code (the empty-negative rule,
    the aesthetic scores), not a copy of it."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLImg2ImgPipeline if refiner else StableDiffusionXLPipeline
    pipe = cls.from_pretrained(model_dir, torch_dtype=torch.float32)
    seen = {}

    def hook(_module, _args, kwargs):
        seen.update(
            pipe_context=kwargs["encoder_hidden_states"],
            pipe_pooled=kwargs["added_cond_kwargs"]["text_embeds"],
            pipe_time_ids=kwargs["added_cond_kwargs"]["time_ids"],
        )
        raise _Seen

    pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    # No negative prompt, as a request without one: SDXL base zeroes it, the refiner encodes "".
    run = dict(prompt=PROMPT, num_inference_steps=4, guidance_scale=5.0, output_type="latent")
    if refiner:
        run.update(image=torch.rand(1, 3, 48, 64), strength=0.5)
    else:
        run.update(height=48, width=64)
    try:
        pipe(**run)
    except _Seen:
        pass
    return {k: v.float() for k, v in seen.items()}


def picture() -> torch.Tensor:
    """An 80x60 RGB picture, uint8 [60, 80, 3]: gradients and a disc, not square."""
    y, x = torch.meshgrid(torch.arange(60.0), torch.arange(80.0), indexing="ij")
    disc = ((x - 50) ** 2 + (y - 25) ** 2 < 200).float()
    r = 255 * (x / 79) * (1 - disc) + 240 * disc
    g = 255 * (y / 59) * (1 - disc) + 40 * disc
    b = 128 + 100 * torch.sin(x / 7) * torch.cos(y / 5)
    return torch.stack([r, g, b], dim=-1).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def embedder_fixture(model_dir: Path) -> dict:
    from PIL import Image
    from transformers import BitImageProcessor, CLIPImageProcessor, CLIPModel, Dinov2Model

    torch.manual_seed(0)
    kind = json.loads((model_dir / "config.json").read_text())["model_type"]
    pic = picture()
    image = Image.fromarray(pic.numpy())
    if kind == "dinov2":
        model = Dinov2Model.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
        processor = BitImageProcessor.from_pretrained(model_dir)
    else:
        model = CLIPModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
        processor = CLIPImageProcessor.from_pretrained(model_dir)
    processed = processor(images=image, return_tensors="pt")["pixel_values"]
    # The batch: random pixels, then the processed picture. Stored in half precision to keep
    # the fixture small; both sides compute on the same (half-rounded) values in f32.
    pixels = torch.cat([torch.randn(1, 3, 224, 224), processed]).half()
    t = {"picture": pic, "pixel_values": pixels}
    pixels = pixels.float()
    if kind == "dinov2":
        out = model(pixels)
        t.update(last_hidden_state=out.last_hidden_state, pooler_output=out.pooler_output)
        # A 2x3-patch grid: the position embeddings resized to a non-square grid.
        t["small_pixel_values"] = torch.randn(1, 3, 28, 42)
        t["small_last_hidden_state"] = model(t["small_pixel_values"]).last_hidden_state
    else:
        t["image_embeds"] = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tokenizer = CLIPTokenizer.from_pretrained(model_dir)
        ids = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        text = model.text_model(input_ids=ids).pooler_output
        t.update(ids=ids.to(torch.int64), text_embeds=model.text_projection(text))
    return {k: v.contiguous() for k, v in t.items()}


@torch.no_grad()
def taesd_fixture(model_dir: Path) -> dict:
    """diffusers' AutoencoderTiny both ways: latents to pixels, pixels to latents."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    latents = torch.randn(1, vae.config.latent_channels, 8, 8) * 2
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    return {
        "latents": latents,
        "decoded": vae.decode(latents).sample,
        "image": image,
        "encoded": vae.encode(image).latents,
    }


def fake_eps(sample: torch.Tensor, t: float) -> torch.Tensor:
    """A stand-in denoiser for the scheduler fixture (the Rust test computes the same)."""
    return sample * 0.5 + math.sin(t / 100.0) * 0.1


@torch.no_grad()
def scheduler_fixture() -> dict:
    """diffusers' LCMScheduler and TCDScheduler (γ = 0.3) on SD's training schedule, driven by
    `fake_eps` with recorded noise: the timesteps and the sample after every step."""
    import diffusers.schedulers.scheduling_lcm as lcm_mod
    import diffusers.schedulers.scheduling_tcd as tcd_mod
    from diffusers import LCMScheduler, TCDScheduler

    torch.manual_seed(0)
    cfg = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    t = {}
    for name, cls, mod, kwargs in [("lcm", LCMScheduler, lcm_mod, {}), ("tcd", TCDScheduler, tcd_mod, {"eta": 0.3})]:
        for steps in (1, 4, 6):
            sched = cls(**cfg)
            sched.set_timesteps(steps)
            noise = torch.randn(steps, 1, 4, 4, 4, dtype=torch.float64).float()
            drawn = iter(noise)
            real = mod.randn_tensor
            mod.randn_tensor = lambda *a, **k: next(drawn)
            try:
                sample = torch.randn(1, 4, 4, 4)
                key = f"{name}{steps}"
                t[f"{key}_initial"] = sample.clone()
                samples = []
                for ts in sched.timesteps:
                    sample = sched.step(fake_eps(sample, float(ts)), ts, sample, **kwargs).prev_sample
                    samples.append(sample)
            finally:
                mod.randn_tensor = real
            t[f"{key}_timesteps"] = sched.timesteps.to(torch.float32)
            t[f"{key}_noise"] = noise
            t[f"{key}_samples"] = torch.stack(samples)
    return t


def fake_v(sample: torch.Tensor, t: float) -> torch.Tensor:
    """A stand-in velocity for the flow-matching fixture (the Rust test computes the same)."""
    return sample * 0.3 + math.sin(t / 100.0) * 0.2


FLOW_CASES = {
    # name: (scheduler config, steps, image tokens)
    "schnell": ({}, 4, 1024),
    "dev_512": ({"shift": 3.0, "use_dynamic_shifting": True}, 28, 1024),
    "dev_1024": ({"shift": 3.0, "use_dynamic_shifting": True}, 20, 4096),
    "linear": ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, 8, 2048),
    "terminal": ({"shift": 3.0, "shift_terminal": 0.1}, 10, 1024),
}


@torch.no_grad()
def flow_fixture() -> dict:
    """diffusers' FlowMatchEulerDiscreteScheduler as FluxPipeline drives it (σ from 1 to 1/n,
    shifted by μ from the image's token count): σ and timesteps per case; for dev_512 the
    sample after every Euler step with `fake_v`, and image-to-image at strength 0.55 as
    FluxImg2ImgPipeline starts it (the steps kept, the noised latents)."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    torch.manual_seed(0)
    t = {}
    for name, (cfg, steps, seq) in FLOW_CASES.items():
        sched = FlowMatchEulerDiscreteScheduler(**cfg)
        c = sched.config
        mu = calculate_shift(seq, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        t[f"{name}_sigmas"] = sched.sigmas.to(torch.float32)
        t[f"{name}_timesteps"] = sched.timesteps.to(torch.float32)
        if name == "dev_512":
            sample = torch.randn(1, 16, 4, 4)
            t["dev_512_initial"] = sample.clone()
            samples = []
            for ts in sched.timesteps:
                sample = sched.step(fake_v(sample, float(ts)), ts, sample).prev_sample
                samples.append(sample)
            t["dev_512_samples"] = torch.stack(samples)
            # FluxImg2ImgPipeline.get_timesteps, then prepare_latents' scale_noise.
            strength = 0.55
            init = min(steps * strength, steps)
            start = int(max(steps - init, 0))
            sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
            kept = sched.timesteps[start:]
            sched.set_begin_index(start)
            x0, noise = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4)
            t.update(img2img_timesteps=kept.to(torch.float32), img2img_x0=x0, img2img_noise=noise,
                     img2img_noised=sched.scale_noise(x0, kept[:1], noise))
    return t


@torch.no_grad()
def t5_fixture(model_dir: Path) -> dict:
    """transformers' T5EncoderModel (FLUX's second text encoder) on fixed token ids: the last
    hidden state, every position attended as FluxPipeline calls it."""
    from transformers import T5EncoderModel

    torch.manual_seed(0)
    model = T5EncoderModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    # Long enough for the logarithmic position buckets (distances past 8 and past 128).
    ids = torch.randint(0, model.config.vocab_size, (2, 160))
    # Its tokenizer as FluxPipeline calls it: padded to the length, truncated, `</s>` kept.
    from transformers import T5TokenizerFast

    tok = T5TokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), eos_token="</s>",
                          pad_token="<pad>", unk_token="<unk>")
    texts = {"tok_short": PROMPT, "tok_long": "a cat and a dog " * 6 + "!"}
    encoded = {k: tok(t, padding="max_length", max_length=16, truncation=True,
                      return_tensors="pt").input_ids.to(torch.int64) for k, t in texts.items()}
    return {"ids": ids.to(torch.int64), "last_hidden_state": model(input_ids=ids).last_hidden_state,
            **encoded}


@torch.no_grad()
def flux_fixture(model_dir: Path) -> dict:
    """diffusers' FluxTransformer2DModel on a 4x4 packed latent, 8 text tokens, σ 0.7 and
    guidance 3.5, with FluxPipeline's position ids (text all zero, image (0, row, column))."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    c = model.config
    latents = torch.randn(1, 16, c.in_channels)
    text = torch.randn(1, 8, c.joint_attention_dim)
    pooled = torch.randn(1, c.pooled_projection_dim)
    timestep, guidance = torch.tensor([0.7]), torch.tensor([3.5])
    txt_ids = torch.zeros(8, 3)
    img_ids = torch.zeros(4, 4, 3)
    img_ids[..., 1] += torch.arange(4)[:, None]
    img_ids[..., 2] += torch.arange(4)[None, :]
    out = model(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled,
                timestep=timestep, guidance=guidance if c.guidance_embeds else None,
                txt_ids=txt_ids, img_ids=img_ids.reshape(16, 3)).sample
    return {"latents": latents, "text": text, "pooled": pooled, "timestep": timestep,
            "guidance": guidance, "out": out}


@torch.no_grad()
def vae_fixture(model_dir: Path) -> dict:
    """A lone AutoencoderKL (FLUX's 16-channel one) both ways, as a pipeline uses it: latents
    unscaled (÷ scaling, + shift) before decoding, scaled (− shift, × scaling) after encoding."""
    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    c = vae.config
    latents = torch.randn(1, c.latent_channels, 8, 8)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    shift = c.shift_factor or 0.0
    return {
        "latents": latents,
        "decoded": vae.decode(latents / c.scaling_factor + shift).sample,
        "image": image,
        "encoded_mean": (vae.encode(image).latent_dist.mean - shift) * c.scaling_factor,
    }


@torch.no_grad()
def flux_pipeline_fixture(model_dir: Path) -> dict:
    """A whole FLUX.1 folder through diffusers' FluxPipeline (or FluxKontextPipeline with a 64x64
    picture as the image to edit): the prompt's T5 and pooled CLIP embeddings, two sampling
    steps at 64x64 from given latents (guidance 3.5, the model's T5 length), and their decoding.
    The latents are saved unpacked, as NanoImg's pipeline holds them."""
    from diffusers import FluxKontextPipeline, FluxPipeline
    from PIL import Image

    kontext = json.loads((model_dir / "model_index.json").read_text())["_class_name"] == "FluxKontextPipeline"
    pipe = (FluxKontextPipeline if kontext else FluxPipeline).from_pretrained(
        model_dir, torch_dtype=torch.float32)
    dev = pipe.transformer.config.guidance_embeds
    max_seq = 512 if dev else 256
    t5, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=max_seq)
    torch.manual_seed(0)
    c, h, w = pipe.vae.config.latent_channels, 8, 8
    latents = torch.randn(1, c, h, w)
    kwargs = dict(prompt=PROMPT, height=64, width=64, num_inference_steps=2, guidance_scale=3.5,
                  latents=pipe._pack_latents(latents, 1, c, h, w), max_sequence_length=max_seq,
                  output_type="latent")
    t = {"t5": t5, "pooled": pooled, "latents": latents}
    if kontext:
        pixels = (torch.rand(64, 64, 3) * 255).to(torch.uint8)
        image = Image.fromarray(pixels.numpy())
        kwargs.update(image=image, _auto_resize=False, max_area=64 * 64)
        t["image"] = pipe.image_processor.preprocess(image, 64, 64).contiguous()
    packed = pipe(**kwargs).images
    out = pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor)
    vc = pipe.vae.config
    t.update(out_latents=out, decoded=pipe.vae.decode(out / vc.scaling_factor + vc.shift_factor).sample)
    return t


def flux_pipeline_kind(p: Path):
    index = p / "model_index.json"
    return index.is_file() and json.loads(index.read_text())["_class_name"].startswith("Flux")


def config(p: Path) -> dict:
    """A lone component's config.json (empty when there is none)."""
    cfg = p / "config.json"
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def vae_kind(p: Path):
    return config(p).get("_class_name") == "AutoencoderKL"


def flux_kind(p: Path):
    return config(p).get("_class_name") == "FluxTransformer2DModel"


def t5_kind(p: Path):
    return config(p).get("model_type") == "t5"


def taesd_kind(p: Path):
    return config(p).get("_class_name") == "AutoencoderTiny"


def embedder_kind(p: Path):
    return config(p).get("model_type") in ("dinov2", "clip")


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    tensors = scheduler_fixture()
    save_file(tensors, dst / "parity-schedulers.safetensors")
    print(f"{dst / 'parity-schedulers.safetensors'}: {len(tensors)} tensors")
    tensors = flow_fixture()
    save_file(tensors, dst / "parity-flow.safetensors")
    print(f"{dst / 'parity-flow.safetensors'}: {len(tensors)} tensors")
    for model_dir in sorted(p for p in src.iterdir()
                            if (p / "model_index.json").is_file() or embedder_kind(p) or taesd_kind(p)
                            or t5_kind(p) or flux_kind(p) or vae_kind(p)):
        if flux_pipeline_kind(model_dir):
            tensors = flux_pipeline_fixture(model_dir)
        elif vae_kind(model_dir):
            tensors = vae_fixture(model_dir)
        elif flux_kind(model_dir):
            tensors = flux_fixture(model_dir)
        elif t5_kind(model_dir):
            tensors = t5_fixture(model_dir)
        elif embedder_kind(model_dir):
            tensors = embedder_fixture(model_dir)
        elif taesd_kind(model_dir):
            tensors = taesd_fixture(model_dir)
        else:
            tensors = fixture(model_dir)
        out = dst / f"parity-{model_dir.name}.safetensors"
        save_file(tensors, out)
        print(f"{out}: {', '.join(f'{k}{list(v.shape)}' for k, v in tensors.items())}")


if __name__ == "__main__":
    main()
