"""Scanning a system folder registers only files that parse as models, never junk that shares a suffix."""

from __future__ import annotations

import json
import os
import time

import pytest

from app.core.importers import UNVERIFIED_PICKLE, ImportErrorKind, scan_path
from app.core.model_registry import ModelRegistry
from tests.core.test_importers import write_llama_gguf


def usr_like(root):
    """Junk as /usr holds it (random .bin, firmware blobs, vim's tutor.pt) and one real, tiny GGUF."""
    (root / "lib" / "valgrind").mkdir(parents=True)
    (root / "lib" / "valgrind" / "xyz.bin").write_bytes(os.urandom(4096))
    (root / "lib" / "firmware").mkdir(parents=True)
    (root / "lib" / "firmware" / "foo.bin").write_bytes(b"\x7fFW" + os.urandom(2048))
    (root / "lib" / "firmware" / "iwlwifi.ucode.pt").write_bytes(os.urandom(512))
    tutor = root / "share" / "vim" / "tutor"
    tutor.mkdir(parents=True)
    (tutor / "tutor.pt").write_text("===============================\n=  Bem-vindo ao tutorial do Vim\n")
    (root / "share" / "ckpt").mkdir(parents=True)
    (root / "share" / "ckpt" / "notes.ckpt").write_bytes(b"\x80\x04" + b"\0" * 100)  # pickle-ish, no model folder
    models = root / "share" / "models"
    models.mkdir(parents=True)
    return write_llama_gguf(models / "tiny-llama.gguf")


def test_only_the_model_is_offered_and_junk_is_skipped_with_a_reason(tmp_path):
    gguf = usr_like(tmp_path)
    models, errors = scan_path(tmp_path)
    assert [m.path for m in models] == [str(gguf)]
    assert models[0].file_type  # planned at the file's own level
    skipped = {os.path.basename(e.path): e for e in errors}
    assert set(skipped) == {"xyz.bin", "foo.bin", "iwlwifi.ucode.pt", "tutor.pt", "notes.ckpt"}
    assert all(e.kind == ImportErrorKind.NOT_A_MODEL and "config.json" in e.message for e in skipped.values())


def test_a_pickle_beside_config_json_is_registered_unverified(tmp_path):
    folder = tmp_path / "gpt2-finetune"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 64,
                                                    "n_head": 2, "vocab_size": 100}))
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 300)
    (model,), errors = scan_path(folder)
    assert errors == [] and model.notes[0].startswith(UNVERIFIED_PICKLE)
    registry = ModelRegistry(user_store=tmp_path / "models.json")
    meta = registry.register_scanned(model)
    assert meta.quality_note.startswith(UNVERIFIED_PICKLE)


def test_a_pickle_asked_for_by_name_is_still_registered(tmp_path):
    ckpt = tmp_path / "v1-5-pruned.ckpt"
    ckpt.write_bytes(b"\x80\x04" + b"\0" * 100)
    (model,), errors = scan_path(ckpt)
    assert errors == [] and model.format == "pytorch-pickle" and model.notes[0].startswith(UNVERIFIED_PICKLE)


@pytest.mark.skipif(not os.path.isdir("/usr/share"), reason="no /usr/share on this system")
def test_scanning_the_real_usr_share_registers_nothing_in_bounded_time(tmp_path):
    registry = ModelRegistry(user_store=tmp_path / "models.json")
    start = time.monotonic()
    models, errors = scan_path("/usr/share")
    registered = [registry.register_scanned(m) for m in models]
    assert time.monotonic() - start < 60
    assert registered == [] and registry.user_models() == []
    assert all(e.kind != ImportErrorKind.NOT_A_MODEL or e.path.endswith((".bin", ".pt", ".pth", ".ckpt"))
               for e in errors)
