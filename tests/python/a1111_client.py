"""Calls a running NanoImg server's A1111 API with the real `webuiapi` package, unchanged.

Usage: a1111_client.py BASE_URL API_KEY MODEL
The key goes in as Basic auth's password (webuiapi's set_auth), as a client that can only send
Basic auth would send it. Exits non-zero (with the reason) if any call fails or answers wrongly.
"""
import sys

import webuiapi
from PIL import Image


def main():
    base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
    api = webuiapi.WebUIApi(baseurl=f"{base}/sdapi/v1", sampler="Euler a", steps=2)
    api.set_auth("any-user", key)

    titles = [m["title"] for m in api.get_sd_models()]
    assert model in titles, titles
    samplers = [s["name"] for s in api.get_samplers()]
    assert "Euler a" in samplers and "DPM++ 2M" in samplers, samplers
    api.set_options({"sd_model_checkpoint": f"{model}.safetensors [0123abcd]"})
    assert api.get_options()["sd_model_checkpoint"] == model

    r = api.txt2img(prompt="a cat", negative_prompt="blurry", seed=5, width=80, height=64,
                    cfg_scale=4, batch_size=2)
    assert len(r.images) == 2 and r.image.size == (80, 64), (len(r.images), r.image.size)
    assert r.info["all_seeds"] == [5, 6], r.info
    assert "Sampler: Euler a" in r.info["infotexts"][0], r.info["infotexts"]
    assert "Sampler: Euler a" in r.image.info.get("parameters", ""), r.image.info
    assert r.parameters["prompt"] == "a cat"

    again = api.txt2img(prompt="a cat", negative_prompt="blurry", seed=5, width=80, height=64,
                        cfg_scale=4, sampler_name="DPM++ 2M", scheduler="Karras")
    assert "DPM++ 2M" in again.info["infotexts"][0], again.info

    edited = api.img2img(images=[r.image], prompt="a dog", denoising_strength=0.5, seed=7,
                         width=80, height=64)
    assert edited.image.size == (80, 64) and edited.info["all_seeds"] == [7], edited.info

    mask = Image.new("L", (80, 64), 0)
    mask.paste(255, (0, 0, 40, 64))
    inpainted = api.img2img(images=[r.image], mask_image=mask, prompt="a hat", seed=8,
                            width=80, height=64, denoising_strength=1.0)
    # The unmasked half is kept (up to the invisible watermark).
    right = lambda im: im.convert("RGB").crop((48, 0, 80, 64)).tobytes()
    a, b = right(r.image), right(inpainted.image)
    diff = sum(abs(x - y) for x, y in zip(a, b)) / len(a)
    assert diff < 6, diff

    try:
        api.txt2img(prompt="a cat", enable_hr=True)
        raise AssertionError("hires fix was not refused")
    except RuntimeError as e:
        assert e.args[0] == 400 and "hires fix" in e.args[1], e.args

    progress = api.get_progress()
    assert progress["state"]["job_count"] == 0, progress
    print("ok")


if __name__ == "__main__":
    main()
