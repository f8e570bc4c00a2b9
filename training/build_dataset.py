#!/usr/bin/env python3
"""Builds the captioned emoji dataset for NanoImg's bundled demo model (issue 3).

Sources, fetched from the npm registry with pinned versions and SHA-256 (never committed):
  - emoji-datasource-google  (Noto Emoji images, Apache-2.0; package metadata MIT)
  - emoji-datasource-twitter (Twemoji images, CC-BY-4.0; package metadata MIT)
  - emojibase-data           (CLDR labels and keywords, MIT)

Output (under --out, default data/emoji):
  images/<style>/<file>.png   64×64 RGB, alpha composited on white
  captions.jsonl              one line per image: file, style, caption, category, base, split

Captions read like prompts: "grinning cat, smiling, animal, face, noto emoji";
skin-tone variants add "medium skin tone". About 5 % of base emoji (by a stable hash of the base
code point sequence, so every variant and style of one emoji falls on the same side) are held
out for evaluation.

    python3 training/build_dataset.py --out data/emoji
"""

import argparse
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

from PIL import Image

PACKAGES = {
    "emoji-datasource-google": ("16.0.0", "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"),
    "emoji-datasource-twitter": ("16.0.0", "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"),
    "emojibase-data": ("17.0.0", "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a"),
}
STYLES = {"google": "noto emoji", "twitter": "twemoji"}
SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}
HELD_OUT_PERCENT = 5


def fetch(cache: Path, name: str) -> Path:
    """`npm pack`s one pinned package into the cache and checks its SHA-256."""
    version, sha = PACKAGES[name]
    tgz = cache / f"{name}-{version}.tgz"
    if not tgz.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if digest != sha:
        raise SystemExit(f"{tgz}: SHA-256 {digest} does not match the pinned {sha}")
    return tgz


def read_member(tar: tarfile.TarFile, path: str) -> bytes:
    f = tar.extractfile(path)
    if f is None:
        raise SystemExit(f"{tar.name}: missing {path}")
    return f.read()


def held_out(base: str) -> bool:
    return int(hashlib.sha256(base.encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT


def words(s: str) -> str:
    return s.replace("_", " ").replace("-", " ").lower().strip()


def caption(label: str, tags: list, category: str, tone: str | None, style: str) -> str:
    parts = [label]
    if tone:
        parts.append(tone)
    seen = set(label.split())
    extra = [t for t in tags if t not in seen][:4]
    parts.extend(extra)
    parts.append(words(category.split("&")[0]))
    parts.append(STYLES[style])
    return ", ".join(dict.fromkeys(p for p in parts if p))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/emoji")
    ap.add_argument("--cache", default="data/npm-cache")
    args = ap.parse_args()
    out, cache = Path(args.out), Path(args.cache)

    with tarfile.open(fetch(cache, "emojibase-data")) as t:
        cldr = {e["hexcode"].upper(): e for e in json.loads(read_member(t, "package/en/data.json"))}
    # Skin-tone variants in emojibase are nested under their base emoji.
    for e in list(cldr.values()):
        for s in e.get("skins", []):
            cldr.setdefault(s["hexcode"].upper(), s)

    rows = []
    for style in STYLES:
        with tarfile.open(fetch(cache, f"emoji-datasource-{style}")) as t:
            entries = json.loads(read_member(t, "package/emoji.json"))
            names = set(t.getnames())
            (out / "images" / style).mkdir(parents=True, exist_ok=True)
            for e in entries:
                if e["category"] == "Component":
                    continue
                variants = [(e["unified"], e["image"], None)]
                for tone_code, v in (e.get("skin_variations") or {}).items():
                    tone = " and ".join(SKIN_TONES[c] for c in tone_code.split("-") if c in SKIN_TONES)
                    variants.append((v["unified"], v["image"], tone or None))
                for unified, image, tone in variants:
                    member = f"package/img/{style}/64/{image}"
                    if member not in names:
                        continue
                    info = cldr.get(unified.upper()) or cldr.get(unified.upper().replace("-FE0F", ""))
                    label = words(info["label"]) if info else words(e["name"] or e["short_name"])
                    tags = [words(x) for x in (info or {}).get("tags", [])]
                    rgba = Image.open(io.BytesIO(read_member(t, member))).convert("RGBA")
                    rgb = Image.new("RGB", rgba.size, (255, 255, 255))
                    rgb.paste(rgba, mask=rgba.split()[3])
                    file = f"images/{style}/{image}"
                    rgb.save(out / file)
                    rows.append({
                        "file": file, "style": style, "base": e["unified"],
                        "caption": caption(label, tags, e["category"], tone, style),
                        "category": e["category"],
                        "split": "heldout" if held_out(e["unified"]) else "train",
                    })
    with open(out / "captions.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    n_held = sum(r["split"] == "heldout" for r in rows)
    print(f"{len(rows)} images ({n_held} held out) in {out}")


if __name__ == "__main__":
    main()
