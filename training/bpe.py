"""A CLIP-style byte-level BPE tokenizer trained on the emoji captions.

Same format and algorithm as OpenAI CLIP (and so the same code path in `nanoimg-engine`'s
tokenizer and in transformers' `CLIPTokenizer`): text is lower-cased, split with CLIP's pattern,
each piece is mapped byte → printable character, its last symbol carries `</w>`, and merges are
applied by rank. The vocabulary is the 256 byte symbols, the same with `</w>`, one entry per
merge, then `<|startoftext|>` and `<|endoftext|>` — CLIP's order.

Only training captions are used, so held-out captions may contain words the vocabulary has never
seen; those fall back to sub-words, as a user's prompt would.
"""

import collections
import json
from pathlib import Path

import regex

PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def pieces(text: str) -> list:
    b2u = bytes_to_unicode()
    text = " ".join(text.lower().split())
    return ["".join(b2u[b] for b in p.encode()) for p in PATTERN.findall(text)]


def merge(word, a: str, b: str) -> list:
    """`word` with every adjacent (a, b) replaced by a + b, left to right."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train(captions: list, merges: int) -> tuple:
    """Learns up to `merges` merges; returns (vocab dict, merge list)."""
    words = collections.Counter()
    for c in captions:
        for p in pieces(c):
            words[tuple(p[:-1]) + (p[-1] + "</w>",)] += 1
    words = dict(words)
    learned = []
    for _ in range(merges):
        pairs = collections.Counter()
        for w, f in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += f
        if not pairs:
            break
        (a, b), f = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if f < 2:
            break
        learned.append((a, b))
        merged = {}
        for w, fw in words.items():
            if a not in w:
                merged[w] = fw
                continue
            out = tuple(merge(w, a, b))
            merged[out] = merged.get(out, 0) + fw
        words = merged
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in learned] + [BOS, EOS]
    vocab = {}
    for t in vocab_list:
        vocab.setdefault(t, len(vocab))
    return vocab, learned


def save(dir: Path, vocab: dict, merges: list, max_length: int):
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (dir / "merges.txt").write_text(
        "#version: 0.2 - trained by NanoImg training/bpe.py\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = dict(special, model_max_length=max_length, tokenizer_class="CLIPTokenizer",
                  do_lower_case=True, clean_up_tokenization_spaces=False)
    (dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


class Tokenizer:
    """Encodes exactly as CLIP does, from the saved vocab and merges (no transformers needed)."""

    def __init__(self, vocab: dict, merges: list, max_length: int):
        self.vocab, self.max_length = vocab, max_length
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.cache = {}

    def bpe(self, piece: str) -> list:
        if piece in self.cache:
            return self.cache[piece]
        w = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(w) > 1:
            ranked = [(self.ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(w, w[1:]))]
            r, _ = min(ranked)
            if r == 1 << 30:
                break
            a, b = self.merges[r]
            w = merge(w, a, b)
        self.cache[piece] = w
        return w

    def __call__(self, text: str) -> list:
        ids = [self.vocab[t] for p in pieces(text) for t in self.bpe(p)]
        ids = [self.vocab[BOS]] + ids[: self.max_length - 2] + [self.vocab[EOS]]
        return ids + [self.vocab[EOS]] * (self.max_length - len(ids))
