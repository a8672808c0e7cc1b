"""`modeldeck estimate`, `plan` and `models` as scripts use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT.parent / "shared" / "checks" / "contract.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_estimate_params_only():
    out = run("estimate", "--params", "8.03e9", "--quant", "Q4_K_M", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["quantization"] == "Q4_K_M"
    assert doc["kv_cache_bytes"] == 0
    assert doc["total_bytes"] == sum(doc[k] for k in ("weights_bytes", "kv_cache_bytes", "compute_bytes",
                                                      "overhead_bytes"))
    assert 4.5e9 < doc["weights_bytes"] < 5.3e9 and doc["approximate"] is True


def test_estimate_with_architecture_matches_the_hand_computed_kv_cache():
    out = run("estimate", "--params", "8.03e9", "--quant", "q4_k_m", "--layers", "32", "--hidden", "4096",
              "--heads", "32", "--kv-heads", "8", "--head-dim", "128", "--vocab", "128256", "--context", "8192",
              "--kv-dtype", "f16", "--batch", "512", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["kv_cache_bytes"] == 2 * 32 * 8192 * 8 * 128 * 2
    assert doc["runtime_settings"]["runtime"] == "llama.cpp" and doc["runtime_settings"]["parallel"] == 1
    file_bytes = sum(doc["weights_by_type"].values())
    assert file_bytes / 2**30 == pytest.approx(4.58, abs=0.02)  # llama.cpp's table for Llama-3-8B
    # llama.cpp keeps the untied token embeddings (128256 × 4096 at Q4_K) in RAM, beside the GPU's share.
    embeddings = 128256 * 4096 // 256 * 144
    assert doc["weights_bytes"] == file_bytes - embeddings
    assert doc["host_bytes"] >= embeddings


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["estimate", "--params", "8e9", "--quant", "Q4_banana"], "unknown quantization"),
        (["estimate", "--quant", "Q4_K_M"], "--params"),
        (["estimate", "--params", "8e9", "--quant", "fp16", "--layers", "32"], "--hidden"),
        (["estimate", "--params", "-5", "--quant", "fp16"], "must not be negative"),
        (["plan", "llama-3.1-8b-instrukt"], "did you mean"),
        (["plan", "llama3.1:8b", "--device", "cuda:7", "--simulate", "rtx4090"], "cuda:0"),
        (["models", "--type", "hologram"], "text_to_image"),
    ],
)
def test_bad_input_gets_a_clear_error(args, words):
    out = run(*args)
    assert out.returncode == 2
    assert words in out.stderr and "Traceback" not in out.stderr


def test_plan_json_contract_and_exit_codes():
    out = run("plan", "mistralai/Ministral-8B-v0.1", "--simulate", "rtx4090", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["model_id"] == "mistralai/Ministral-8B-Instruct-2410"
    assert doc["fits"] is True and doc["device"] == "cuda:0" and doc["headroom_bytes"] >= 0
    names = [a["quantization"] for a in doc["alternatives"]]
    assert doc["quantization"] in names and "Q4_K_M" in names
    too_big = run("plan", "llama3.1:405b", "--simulate", "rtx3060", "--quant", "fp16", "--json")
    assert too_big.returncode == 3
    doc = json.loads(too_big.stdout)
    assert doc["fits"] is False and doc["needed_bytes"] > doc["available_bytes"]


def test_plan_human_output_shows_the_breakdown():
    out = run("plan", "Qwen/Qwen2.5-32B-Instruct", "--simulate", "rtx4060ti-16gb", "--context", "16384")
    assert out.returncode == 0, out.stderr
    for word in ("weights", "KV cache", "compute", "overhead", "total", "alternatives", "GiB"):
        assert word in out.stdout


def test_models_json_and_filters():
    out = run("models", "--json")
    models = json.loads(out.stdout)["models"]
    assert len(models) >= 40 and all(m["source"] for m in models)
    stt = json.loads(run("models", "--type", "speech_to_text", "--json").stdout)["models"]
    assert stt and all(m["model_type"] == "speech_to_text" for m in stt)
    fits = json.loads(run("models", "--fits", "--simulate", "rtx3060", "--type", "llm", "--json").stdout)["models"]
    ids = [m["model_id"] for m in fits]
    assert "meta-llama/Llama-3.2-1B-Instruct" in ids and "meta-llama/Llama-3.1-405B-Instruct" not in ids


@pytest.mark.skipif(not CONTRACT.exists(), reason="the shared contract checker is not beside this checkout")
def test_shared_cli_contract():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([sys.executable, str(CONTRACT)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env=env)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("args", [("mistralai/Ministral-8B-v0.1",), ("stabilityai/stable-diffusion-xl-base-1.0",),
                                  ("meta-llama/Llama-3.3-70B-Instruct",),
                                  ("stabilityai/stable-diffusion-xl-base-1.0", "--quant", "fp8", "--device", "cuda:0")])
def test_cli_plan_and_the_manager_agree_on_the_same_ledger(tmp_path, args):
    """`modeldeck plan` is the manager's own answer: same planner, same safety margin, same ledger."""
    from app.core.hardware_profiler import HardwareProfiler
    from app.core.model_registry import ModelRegistry
    from app.core.model_resource_manager import ModelResourceManager

    rig = tmp_path / "rig.json"  # fixed usage by others, so both processes measure the same card
    rig.write_text(json.dumps({"gpus": [{"card": "rtx3060", "processes": [{"name": "Xorg", "used_gib": 0.4},
                                                                           {"name": "game", "used_gib": 3.5}]}]}))
    out = run("plan", *args, "--simulate", str(rig), "--json")
    doc = json.loads(out.stdout)
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate=str(rig)), registry=ModelRegistry())
    quant = args[args.index("--quant") + 1] if "--quant" in args else None
    device = args[args.index("--device") + 1] if "--device" in args else None
    answer = manager.plan(args[0], quant, device)
    expected = answer.to_dict() if not hasattr(answer, "placement") else answer.to_dict(
        manager.available_bytes(answer.placement.home_device))
    assert out.returncode == (0 if hasattr(answer, "placement") else 3), out.stderr
    for key in ("model_id", "quantization", "device", "placement", "fits", "gpu_layers", "needed_bytes",
                "headroom_bytes", "reason", "shares", "actions", "estimate"):
        assert doc[key] == expected[key], key
    # The margin is the manager's (0.45 GiB per GPU), not a headroom of the CLI's own.
    assert doc["headroom_bytes"] == expected["headroom_bytes"]


def test_plan_a_folder_with_a_config_json(tmp_path):
    """`plan PATH`: a model nobody registered, described by its config.json alone (Qwen2.5-7B's numbers)."""
    folder = tmp_path / "Qwen2.5-7B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584, "intermediate_size": 18944,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"}))
    out = run("plan", str(folder), "--simulate", "rtx3060", "--quant", "Q4_K_M", "--context", "8192", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    # 28 layers × 8192 tokens × 4 KV heads × 128 × 2 (K, V) × 2 B
    assert doc["estimate"]["kv_cache_bytes"] == 28 * 8192 * 4 * 128 * 2 * 2
    assert doc["estimate"]["host_bytes"] > 0 and doc["quantization"] == "Q4_K_M"
    settings = doc["runtime_settings"]  # the settings as they applied, defaults filled in
    assert settings["runtime"] == "llama.cpp" and settings["flash_attention"] is True and settings["ubatch"] == 512
    text = run("plan", str(folder), "--simulate", "rtx3060", "--no-flash-attention")
    assert text.returncode == 0 and "no flash attention" in text.stdout and "Traceback" not in text.stderr


def test_plan_a_folder_that_is_not_one_model_is_refused_at_once(tmp_path):
    (tmp_path / "a").mkdir()
    out = run("plan", str(tmp_path), "--simulate", "rtx3060")
    assert out.returncode != 0 and "not one model's folder" in out.stderr and "Traceback" not in out.stderr


def test_plan_path_says_when_its_config_json_was_not_used(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"model.embed_tokens.weight": np.zeros((32, 16), dtype=np.float16)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1_000_000_000,
                                                      "hidden_size": 16, "num_attention_heads": 2}))
    text = run("plan", str(tmp_path), "--simulate", "rtx3060")
    assert text.returncode == 0 and "config.json not used: num_hidden_layers is 1,000,000,000" in text.stdout
    doc = json.loads(run("plan", str(tmp_path), "--simulate", "rtx3060", "--json").stdout)
    assert "num_hidden_layers" in doc["model_note"]
