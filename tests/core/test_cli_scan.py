"""`modeldeck scan`: real files in, exact bytes out, registered for the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, data_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_DATA_HOME": str(data_home)}
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=env)


def write_gguf(path: Path) -> int:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("Pocket Llama")
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(4096)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tensor("token_embd.weight", np.ones((320, 64), dtype=np.float16))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return 320 * 64 * 2 + 64 * 4


def test_scan_registers_exact_models_and_reports_bad_files(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    gguf_bytes = write_gguf(models / "pocket-llama-f16.gguf")
    st = models / "tiny-bert"
    st.mkdir()
    save_file({"embeddings.weight": np.zeros((100, 32), dtype=np.float32)}, str(st / "model.safetensors"))
    (st / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 32,
                                                "num_attention_heads": 2, "vocab_size": 100}))
    old = models / "old-finetune"  # a pickle counts in a model's folder (config.json beside it), unverified
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "old.ckpt").write_bytes(b"\x80\x04not really a pickle")
    (models / "valgrind.bin").write_bytes(bytes(range(256)) * 4)  # a pickle-named file that is no model
    (models / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    home = tmp_path / "data"

    out = run("scan", str(models), "--json", data_home=home)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    by_format = {m["formats"][0]: m for m in doc["models"]}
    assert by_format["gguf"]["weight_bytes"] == gguf_bytes and by_format["gguf"]["exact"] is True
    assert by_format["gguf"]["file_type"] == "F16" and by_format["gguf"]["origin"] == "scanned"
    assert by_format["safetensors"]["weight_bytes"] == 100 * 32 * 4
    assert by_format["safetensors"]["model_type"] == "embedding"
    assert by_format["pytorch-pickle"]["exact"] is False
    assert by_format["pytorch-pickle"]["notes"][0].startswith("unverified (pickle: not read)")
    assert [Path(e["path"]).name for e in doc["ignored"]] == ["valgrind.bin"]
    assert [e["path"].endswith("cut.gguf") for e in doc["errors"]] == [True]
    assert "incomplete" in doc["errors"][0]["message"]

    # Registered for good: the next command sees them.
    listed = json.loads(run("models", "--search", "pocket llama", "--json", data_home=home).stdout)["models"]
    assert [m["name"] for m in listed] == ["Pocket Llama"]
    saved = json.loads((home / "modeldeck" / "models.json").read_text())
    assert len(saved["models"]) == 3


def test_scan_human_output_and_nothing_found(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run("scan", str(empty), data_home=tmp_path / "d")
    assert out.returncode == 0 and "0 model(s) registered" in out.stdout
    missing = run("scan", str(tmp_path / "nope"), data_home=tmp_path / "d")
    assert missing.returncode == 1 and "skipped" in missing.stderr
