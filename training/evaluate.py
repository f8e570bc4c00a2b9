#!/usr/bin/env python3
"""Measures the bundled model honestly, through the engine users run (`nanoimg generate`).

1. Trains a small CNN on the *real* training images to recognise each emoji's category
   (9 classes: smileys, people, animals, food, travel, activities, objects, symbols, flags) and
   its style (Noto or Twemoji).
2. For every held-out caption (never seen in training), generates one image with
   `nanoimg generate` at the model's default settings.
3. Reports the classifier's accuracy on the real held-out images next to its accuracy on the
   generated ones: how often a picture drawn from an unseen prompt is recognised as what the
   prompt asked for, against how often the real emoji is.
4. Draws the sample grid (docs/samples/emoji-grid.png): training prompts, held-out prompts and
   combinations that appear in no caption.

    python training/evaluate.py --nanoimg target/release/nanoimg --model models/nanoimg-emoji
"""

import argparse
import collections
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

CATEGORIES = ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
              "Activities", "Objects", "Symbols", "Flags"]
STYLES = ["google", "twitter"]


def load(data: Path, rows: list) -> torch.Tensor:
    arr = np.stack([np.asarray(Image.open(data / r["file"]).convert("RGB")) for r in rows])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 32, 64, 128, 192]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) for b in chans[1:])
        self.category = nn.Linear(chans[-1], len(CATEGORIES))
        self.style = nn.Linear(chans[-1], len(STYLES))

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        x = x.mean(dim=(2, 3))
        return self.category(x), self.style(x)


def train_classifier(x, cat, sty, epochs: int) -> Classifier:
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    # Balanced sampling: People & Body would otherwise be 60 % of every batch.
    counts = torch.bincount(cat, minlength=len(CATEGORIES)).float()
    weights = 1.0 / counts[cat]
    steps = epochs * len(x) // 64
    for step in range(steps):
        idx = torch.multinomial(weights, 64, replacement=True)
        xb = x[idx]
        # Small random shifts: generated emoji are not pixel-aligned with the real ones.
        dx, dy = np.random.randint(-4, 5, 2)
        xb = torch.roll(xb, shifts=(int(dy), int(dx)), dims=(2, 3))
        lc, ls = model(xb)
        loss = F.cross_entropy(lc, cat[idx]) + F.cross_entropy(ls, sty[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
    return model.eval()


@torch.no_grad()
def scores(model, x, cat, sty) -> dict:
    pc, ps = [], []
    for i in range(0, len(x), 256):
        c, s = model(x[i:i + 256])
        pc.append(c.argmax(1))
        ps.append(s.argmax(1))
    pc, ps = torch.cat(pc), torch.cat(ps)
    per_class = [(pc[cat == k] == k).float().mean().item() for k in range(len(CATEGORIES)) if (cat == k).any()]
    return {"category_accuracy": (pc == cat).float().mean().item(),
            "category_balanced_accuracy": float(np.mean(per_class)),
            "style_accuracy": (ps == sty).float().mean().item(), "n": len(x)}


def generate(nanoimg: str, model: str, prompt: str, seed: int, out: Path):
    subprocess.run([nanoimg, "generate", prompt, "--model", model, "--seed", str(seed), "-o", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


GRID = [
    ("seen in training", ["grinning face", "smiling cat with heart eyes", "red apple", "pizza", "rocket",
                          "dog face", "woman cook, medium skin tone", "flag: japan"]),
    ("held out", None),
    ("unseen combinations", ["a smiling cat face", "a cat face wearing sunglasses", "a blue apple",
                             "a green heart with stars", "a sad pizza", "a red car, twemoji",
                             "a red car, noto emoji", "an owl wearing a crown"]),
]


def grid(args, held_labels: list, tmp: Path):
    font = ImageFont.load_default()
    cell, pad, label_h = 128, 8, 30
    rows = [(t, p if p is not None else held_labels) for t, p in GRID]
    w = 8 * (cell + pad) + pad
    h = sum(label_h + cell + label_h for _ in rows) + pad
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for r, (title, prompts) in enumerate(rows):
        draw.text((pad, y), title, fill="black", font=font)
        y += label_h
        for c, prompt in enumerate(prompts[:8]):
            out = tmp / f"grid-{r}-{c}.png"
            generate(args.nanoimg, args.model, prompt, 7, out)
            im = Image.open(out).convert("RGB").resize((cell, cell), Image.NEAREST)
            x = pad + c * (cell + pad)
            canvas.paste(im, (x, y))
            text = prompt if len(prompt) <= 22 else prompt[:21] + "…"
            draw.text((x, y + cell + 2), text, fill="black", font=font)
        y += cell + label_h
    args.grid.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.grid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--nanoimg", default="target/release/nanoimg")
    ap.add_argument("--model", default="models/nanoimg-emoji")
    ap.add_argument("--work", type=Path, default=Path("data/eval"))
    ap.add_argument("--grid", type=Path, default=Path("docs/samples/emoji-grid.png"))
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    rows = [json.loads(line) for line in open(args.data / "captions.jsonl")]
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == "heldout"]
    labels = lambda rs: (torch.tensor([CATEGORIES.index(r["category"]) for r in rs]),
                         torch.tensor([STYLES.index(r["style"]) for r in rs]))
    t0 = time.time()
    clf = train_classifier(load(args.data, train), *labels(train), args.epochs)
    print(f"classifier trained in {time.time() - t0:.0f}s")

    real = scores(clf, load(args.data, held), *labels(held))
    gen_dir = args.work / "generated"
    gen_dir.mkdir(exist_ok=True)
    t0 = time.time()
    for i, r in enumerate(held):
        out = gen_dir / f"{i:04}.png"
        if not out.exists():
            generate(args.nanoimg, args.model, r["caption"], i, out)
    per_image = (time.time() - t0) / len(held)
    gen_rows = [dict(r, file=str((gen_dir / f"{i:04}.png").resolve())) for i, r in enumerate(held)]
    fake = scores(clf, load(Path("/"), gen_rows), *labels(held))
    counts = collections.Counter(r["category"] for r in held)
    result = {"real_heldout": real, "generated_heldout": fake,
              "majority_class_rate": max(counts.values()) / len(held),
              "seconds_per_generated_image_including_process_start": per_image}
    print(json.dumps(result, indent=2))
    (args.work / "quality.json").write_text(json.dumps(result, indent=2) + "\n")

    seen = set()
    held_labels = []
    for r in held:
        label = r["caption"].split(", ")[0]
        if label not in seen and r["category"] not in ("Flags",) and len(held_labels) < 8:
            seen.add(label)
            held_labels.append(label)
    grid(args, held_labels, args.work)
    print(f"grid written to {args.grid}")


if __name__ == "__main__":
    main()
