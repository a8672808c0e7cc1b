"""ModelDeck's estimates against the memory figures other projects published (tests/data/published_memory.json).

``compare(row)`` runs the estimator with the row's model, level and runtime settings and returns the terms
both sides state, or a reason the row cannot be compared. ``python -m tests.published`` prints the table by
category (median and worst error) that the closing note of the estimation work quotes.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from app.core.model_spec import ModelArchitecture, ModelMetadata, ModelType
from app.core.quantization_strategy import estimate_model
from app.core.runtime_profile import RuntimeProfile

DATA = Path(__file__).parent / "data" / "published_memory.json"
_TYPES = {"llm": ModelType.LLM, "vlm": ModelType.LLM, "diffusion": ModelType.TEXT_TO_IMAGE,
          "video": ModelType.TEXT_TO_VIDEO, "speech": ModelType.SPEECH_TO_TEXT}
_LEVELS = {"bnb-nf4": "nf4", "bnb-int8": "int8", "mxfp4": "MXFP4"}
#: Tolerance on the total by category (the issue's bar): LLMs 5%, the rest 15%.
TOLERANCE = {"llm": 0.05, "vlm": 0.15, "diffusion": 0.15, "video": 0.15, "speech": 0.15}


def rows() -> list[dict[str, Any]]:
    return json.loads(DATA.read_text())["rows"]


def _metadata(row: dict[str, Any]) -> ModelMetadata:
    m = row["model"]
    arch = dict(m.get("architecture") or {})
    if m.get("components"):
        arch["components"] = m["components"]
    params = m.get("parameters") or (sum(m["components"].values()) if m.get("components") else None)
    return ModelMetadata(name=m["name"], provider="other", model_type=_TYPES[row["category"]],
                         model_id=m.get("catalog_id") or m["name"], parameters=params,
                         parameters_exact=bool(params), architecture=ModelArchitecture(**arch) if arch else None,
                         native_dtype="fp16" if row["category"] != "llm" else None, origin="user")


def compare(row: dict[str, Any]) -> tuple[list[tuple[str, int, int]], str | None]:
    """([(term, estimate, published)], None) or ([], why the row is not compared)."""
    rt = dict(row.get("runtime") or {})
    level = _LEVELS.get(str(row["quantization"]).lower(), row["quantization"])
    if level == "unknown":
        return [], "the level is not stated"
    if rt.get("gpu_layers") not in (None, "all"):
        return [], "a partial offload (layers in RAM) is not compared here"
    if rt.get("offload") == "sequential":
        return [], "sequential (per-layer) offload is not modelled"
    if (rt.get("gpus") or 1) > 1:
        return [], "a run spread over several GPUs (sequence parallel) is not compared"
    if "--offload_model" in str(rt.get("flags", "")):
        return [], "Wan's own offload_model keeps the DiT resident while umT5 encodes: not diffusers' model offload"
    if row["category"] == "vlm" and not (row["model"].get("components") or {}).get("vision_encoder"):
        return [], "the vision tower's size is not stated"
    if not row["model"].get("architecture") and not row["model"].get("parameters") \
            and not row["model"].get("components"):
        return [], "the model's size is not stated"
    profile = RuntimeProfile(
        runtime=rt.get("runtime"), backend=rt.get("backend"), flash_attention=rt.get("flash_attention"),
        parallel=rt.get("parallel"),
        batch=rt.get("images") if row["category"] in ("diffusion", "video", "speech") and rt.get("images") else
        (rt.get("batch") if row["category"] == "speech" else rt.get("batch")),
        ubatch=rt.get("ubatch"), cache_type_k=rt.get("cache_type_k"), cache_type_v=rt.get("cache_type_v"),
        width=rt.get("width"), height=rt.get("height"), frames=rt.get("frames"), beams=rt.get("beams"),
        offload=rt.get("offload", "none"), text_encoder_device=rt.get("text_encoder_device", "gpu"),
        vae_tiling=bool(rt.get("vae_tiling")), vae_slicing=bool(rt.get("vae_slicing")),
        component_levels=tuple((k[: -len("_level")], _LEVELS.get(str(v).lower(), v)) for k, v in rt.items()
                               if k.endswith("_level")))
    try:
        meta = _metadata(row)
        est = estimate_model(meta, level, context=rt.get("context"), profile=profile,
                             device_kind="cpu" if rt.get("backend") == "cpu" else "gpu")
    except ValueError as err:
        return [], f"not estimable: {err}"
    measured = row["measured"]
    python = profile.defaults.kind == "python" and row["category"] in ("diffusion", "video")
    ours = {
        "weights_gpu": est.weights_bytes, "kv_cache": est.kv_cache_bytes, "compute_gpu": est.compute_bytes,
        "weights_cpu": est.host_bytes, "total_gpu": est.total_bytes,
        # torch.cuda.max_memory_allocated (the diffusers posts) leaves out the CUDA context; nvml figures keep it
        "peak_gpu": est.total_bytes - (est.overhead_bytes if python else 0),
        "total_ram": est.total_bytes + est.host_bytes if rt.get("backend") == "cpu" else None,
    }
    out = [(term, ours[term], int(measured[term])) for term in ours
           if term in measured and ours[term] is not None and measured[term]]
    return out, None if out else "no term both sides state"


def _error(est: int, ref: int) -> float:
    return est / ref - 1


def main() -> None:
    by_cat: dict[str, list[tuple[str, float]]] = {}
    for row in rows():
        terms, why = compare(row)
        head = f"{row['category']:<9} {row['kind']:<13} {row['id']}"
        if why:
            print(f"{head}: not compared ({why})")
            continue
        parts = ", ".join(f"{t} {e / 2**30:.2f} vs {r / 2**30:.2f} GiB ({_error(e, r):+.1%})" for t, e, r in terms)
        print(f"{head}: {parts}")
        main_term = next((t for t in terms if t[0] in ("total_gpu", "peak_gpu", "total_ram")), None)
        if main_term:
            by_cat.setdefault(f"{row['category']} ({row['kind']})", []).append(
                (row["id"], _error(main_term[1], main_term[2])))
    print("\ncategory (kind)                 rows  median |err|  worst")
    for cat, errs in sorted(by_cat.items()):
        worst = max(errs, key=lambda e: abs(e[1]))
        med = statistics.median(abs(e) for _, e in errs)
        print(f"{cat:<31} {len(errs):>4}  {med:>11.1%}  {worst[1]:+.1%} {worst[0]}")


if __name__ == "__main__":
    main()
