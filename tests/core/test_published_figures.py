"""Estimates against the figures other projects published (tests/data/published_memory.json), per term.

`python -m tests.published` prints every row. The bars: LLM totals within 5% where the runtime settings
match; diffusion and speech within 15%. Rows the estimator does not meet yet are listed in KNOWN_MISSES
with the reason, and the test fails when one of them starts to pass, so the list stays true.
"""

from __future__ import annotations

import pytest

from tests.published import TOLERANCE, compare, rows

#: Rows outside the bar, and why (see the estimation issue's closing note).
KNOWN_MISSES = {
    "gguf-parser-llama31-405b-iq1m-131k": "gguf-parser's 405B compute at 131k tokens is ~64 GiB above llama.cpp's "
                                          "graph formula that matches its other rows",
    "gguf-parser-llama31-405b-iq1m-131k-fa": "as above, with flash attention",
    "gguf-parser-llama31-405b-iq1m-131k-nommap": "as above",
    "flux-dev-bnb-nf4": "bitsandbytes 4-bit in diffusers keeps more layers at 16 bits than the linear-layer model",
    "sdxl-blog-fp16-model-offload": "diffusers of 2023 kept the UNet on the GPU while the VAE decoded; today's "
                                    "hooks move it out first (the SD3 blog's offload rows agree with that)",
    "sd3-blog-8bit-t5": "bitsandbytes 8-bit keeps T5's layer norms and some projections at 16 bits: more than "
                        "8 bits a weight",
    "pixart-sigma-quanto-blog-fp16-b4": "the blog's figure is the same to 1 MB for 1 and 4 images: it does not "
                                        "include the batch's denoising or decoding",
    "gguf-parser-qwen2vl-2b-f16-mmproj-32k": "gguf-parser's projector compute at the time ignored flash attention "
                                             "(its issues #21, #23, #44)",
    "fw-bench-small-cpu-openaiwhisper-fp32": "openai-whisper on the CPU: the cross-attention cache per beam is "
                                             "counted at fp32; the run holds less",
    "fw-bench-largev2-gpu-ctranslate2-int8-b8": "CTranslate2 int8 with 8 windows: the self-attention cache at "
                                                "100 tokens × 5 beams per window is more than it holds",
}


def _main_term(terms):
    return next((t for t in terms if t[0] in ("total_gpu", "peak_gpu", "total_ram")), None)


# openai-whisper's README "Required VRAM" column rounds to whole GB and is about twice what faster-whisper's
# benchmark measured with openai-whisper itself: those rows are printed, not held to the bar.
CASES = [r for r in rows() if r["category"] in ("llm", "diffusion", "video", "vlm")
         or (r["category"] == "speech" and r["kind"] == "measured")]


@pytest.mark.parametrize("row", CASES, ids=[r["id"] for r in CASES])
def test_totals_within_the_category_bar(row):
    terms, why = compare(row)
    main = _main_term(terms)
    if why or main is None:
        pytest.skip(why or "no total stated")
    _, est, ref = main
    error = est / ref - 1
    within = abs(error) <= TOLERANCE[row["category"]]
    if row["id"] in KNOWN_MISSES:
        assert not within, f"{row['id']} now meets the bar ({error:+.1%}): remove it from KNOWN_MISSES"
    else:
        assert within, f"{row['id']}: {est / 2**30:.2f} GiB vs {ref / 2**30:.2f} GiB published ({error:+.1%})"


def test_llama_cpp_logs_match_per_term():
    """llama.cpp's printed buffers: weights on the GPU, token embeddings in RAM, compute with and without flash
    attention, KV cache; each within 5% where the model's architecture is fully stated."""
    checked = 0
    for row in rows():
        if row["kind"] != "runtime_log" or row["category"] != "llm":
            continue
        terms, why = compare(row)
        for term, est, ref in terms:
            if row["id"].startswith("llamacpp-mixtral") and term != "kv_cache":
                continue  # the log's model buffer is of a file whose tensor mix differs from llama.cpp's preset rules
            assert abs(est / ref - 1) <= 0.05 or abs(est - ref) < (16 << 20), (row["id"], term, est, ref)
            checked += 1
    assert checked >= 6
