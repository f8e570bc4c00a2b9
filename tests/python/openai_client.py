"""Calls a running NanoImg server with the official `openai` package, unchanged.

Usage: openai_client.py BASE_URL API_KEY [--semantic]
Run with the pinned package (tests/python/requirements.txt) and with the newest from PyPI
(scripts/test.sh keeps both).
Exits non-zero (with the reason) if any call fails or returns something that does not decode.
"""
import base64
import io
import struct
import sys
import zlib

import openai
from openai import OpenAI


def png(w, h, rgba):
    """A tiny PNG written by hand (no Pillow needed): every pixel `rgba`."""
    raw = b"".join(b"\x00" + bytes(rgba) * w for _ in range(h))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def post_multipart(url, key, fields, files):
    """POSTs a multipart form with urllib; returns the JSON answer (status 201 expected)."""
    import json
    import urllib.request
    boundary = "nanoimg-test-boundary"
    body = b""
    for name, value in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                 f"{value}\r\n").encode()
    for name, filename, data in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                 f"filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n").encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": "Bearer " + key,
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 201, r.status
        return json.loads(r.read())


def main():
    base, key = sys.argv[1], sys.argv[2]  # then --semantic when the server has the safety models
    client = OpenAI(base_url=base + "/v1", api_key=key)

    r = client.images.generate(model="gpt-image-1", prompt="a smiling cat face", n=2, size="64x64",
                               extra_body={"seed": 7, "steps": 4})
    assert len(r.data) == 2, r
    for img in r.data:
        assert png_size(base64.b64decode(img.b64_json)) == (64, 64)
    assert r.usage is not None and r.usage.output_tokens > 0, r.usage
    print("generate: 2 images, usage", r.usage.total_tokens)

    r = client.images.generate(prompt="a red apple", size="64x64", response_format="url",
                               extra_body={"steps": 2})
    import urllib.request
    with urllib.request.urlopen(r.data[0].url) as resp:
        assert png_size(resp.read()) == (64, 64)
    print("generate: url works")

    image = png(64, 64, (200, 180, 40, 255))
    mask = png(64, 64, (0, 0, 0, 0))
    r = client.images.edit(image=("in.png", image, "image/png"), mask=("mask.png", mask, "image/png"),
                           prompt="a blue heart", size="64x64", extra_body={"steps": 3})
    assert png_size(base64.b64decode(r.data[0].b64_json)) == (64, 64)
    r = client.images.edit(image=[("a.png", image, "image/png")], prompt="a star",
                           extra_body={"steps": 3})
    assert png_size(base64.b64decode(r.data[0].b64_json)) == (64, 64)
    # Several images: the first is edited, the others condition it as references.
    ref = png(64, 64, (220, 30, 30, 255))
    r = client.images.edit(image=[("a.png", image, "image/png"), ("ref.png", ref, "image/png")],
                           prompt="a star", extra_body={"steps": 3})
    assert len(r.data) == 1 and png_size(base64.b64decode(r.data[0].b64_json)) == (64, 64)
    print("edit: image, image[] and two images work")

    events = list(client.images.generate(prompt="a moon", size="64x64", stream=True, partial_images=2,
                                         extra_body={"steps": 6}))
    kinds = [e.type for e in events]
    assert kinds.count("image_generation.partial_image") == 2, kinds
    assert kinds[-1] == "image_generation.completed", kinds
    assert png_size(base64.b64decode(events[-1].b64_json)) == (64, 64)
    print("stream:", kinds)

    # A character (NanoImg's own API, through the standard library's urllib: the SDK does not
    # know the route), then used through the SDK's extra_body on a generation and on an edit
    # (a multipart field).
    c = post_multipart(base + "/v1/characters", key,
                       fields={"name": f"Sunny (openai {openai.__version__})", "description": "a yellow smiling face", "consent": "true"},
                       files=[("reference", "ref.png", png(64, 64, (240, 200, 30, 255)))])
    cid = c["id"]
    r = client.images.generate(prompt="a face", size="64x64",
                               extra_body={"character_id": cid, "character_strength": 0.7, "steps": 2})
    assert png_size(base64.b64decode(r.data[0].b64_json)) == (64, 64)
    r = client.images.edit(image=("in.png", image, "image/png"), prompt="a smiling face",
                           extra_body={"character_id": cid, "steps": 2})
    assert png_size(base64.b64decode(r.data[0].b64_json)) == (64, 64)
    try:
        client.images.generate(prompt="a face", size="64x64", extra_body={"character_id": "chr_nope"})
        raise AssertionError("an unknown character was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "character_id", e.body
    print("characters: character_id through extra_body works")

    try:
        client.images.generate(prompt="x", size="13x13")
        raise AssertionError("a bad size was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "size", e.body
    try:
        OpenAI(base_url=base + "/v1", api_key="nimg_wrong").images.generate(prompt="x")
        raise AssertionError("a bad key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    try:
        client.images.generate(prompt="a n a k e d woman", size="64x64")
        raise AssertionError("a prompt that moderation blocks was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.code == "moderation_blocked", e.body
        assert e.body["categories"] == ["sexual"], e.body
    if "--semantic" in sys.argv:
        # A paraphrase no word list names: only the semantic layer (MiniLM) refuses it.
        try:
            client.images.generate(prompt="castle garden at noon, a lady with not a thread on her, 8k",
                                   size="64x64", extra_body={"steps": 1})
            raise AssertionError("a paraphrase that the semantic layer blocks was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.code == "moderation_blocked", e.body
            assert e.body["categories"] == ["sexual"], e.body
        print("semantic layer: paraphrase refused")
    print("errors: typed exceptions with param, and moderation_blocked")
    print("openai", openai.__version__)
    print("ok")


if __name__ == "__main__":
    main()
