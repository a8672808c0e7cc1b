"""A user entry never replaces a built-in silently; user models are checked before they are saved."""

from __future__ import annotations

import json

import pytest

from app.core.model_registry import (
    BuiltinConflict,
    InvalidModel,
    ModelMetadata,
    ModelRegistry,
    RegistryError,
    validate_user_model,
)
from app.core.quantization_strategy import estimate_model

LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"


def mine(model_id: str, **kw) -> ModelMetadata:
    data = dict(name="Mine", provider="other", model_type="llm", size_gb=1.0, model_id=model_id)
    data.update(kw)
    return ModelMetadata(**data)


@pytest.fixture
def store(tmp_path):
    return tmp_path / "models.json"


def _bf16_total(registry: ModelRegistry) -> int:
    return estimate_model(registry.get_model(LLAMA8), "bf16", context=4096).total_bytes


def test_an_existing_builtin_id_is_refused_with_a_free_copy_id(store):
    r = ModelRegistry(user_store=store)
    builtin = r.get_model(LLAMA8)
    before = _bf16_total(r)
    with pytest.raises(BuiltinConflict) as info:
        r.register_model(mine(LLAMA8, size_gb=2.35))
    assert info.value.builtin is builtin and info.value.suggested_id == f"{LLAMA8}-copy"
    assert "built-in model" in str(info.value) and "override=True" in str(info.value)
    assert r.get_model(LLAMA8) is builtin and _bf16_total(r) == before
    assert not store.exists()  # nothing saved
    # Also by an alias or a case variant of the id: the built-in answers to those too.
    for other in ("meta-llama/Llama-3.1-8B", "META-LLAMA/llama-3.1-8b-instruct"):
        with pytest.raises(BuiltinConflict):
            r.register_model(mine(other))
    # A copy under the suggested id is a model of its own; the built-in is untouched.
    copy = r.register_model(mine(info.value.suggested_id, size_gb=2.35))
    assert r.get_model(LLAMA8) is builtin and _bf16_total(r) == before
    assert ModelRegistry(user_store=store).get_model(copy.id).size_gb == 2.35
    with pytest.raises(BuiltinConflict) as again:
        r.register_model(mine(LLAMA8))
    assert again.value.suggested_id == f"{LLAMA8}-copy2"


def test_an_explicit_override_replaces_the_builtin_until_it_is_deleted(store):
    r = ModelRegistry(user_store=store)
    builtin = r.get_model(LLAMA8)
    before = _bf16_total(r)
    r.register_model(mine(LLAMA8, name="My 8B", size_gb=2.35), override=True)
    assert r.is_override(LLAMA8) and r.get_model(LLAMA8).name == "My 8B"
    assert ModelRegistry(user_store=store).is_override(LLAMA8)  # saved, and an override after a restart
    assert _bf16_total(r) != before
    r.register_model(mine(LLAMA8, name="My 8B v2", size_gb=2.5))  # replacing one's own override needs no flag
    assert r.get_model(LLAMA8).name == "My 8B v2"
    r.remove_model(LLAMA8)  # revert
    assert r.get_model(LLAMA8) is builtin and not r.is_override(LLAMA8) and _bf16_total(r) == before
    again = ModelRegistry(user_store=store)
    assert again.get_model(LLAMA8).origin == "builtin" and json.loads(store.read_text())["models"] == []


def test_a_library_caller_re_registers_its_own_user_id(store):
    r = ModelRegistry(user_store=store)
    r.register_model(mine("me/mine", size_gb=1.0))
    r.register_model(mine("me/mine", size_gb=3.0))
    assert ModelRegistry(user_store=store).get_model("me/mine").size_gb == 3.0


def test_renaming_onto_a_builtin_or_another_model_is_refused(store):
    r = ModelRegistry(user_store=store)
    r.register_model(mine("me/one"))
    r.register_model(mine("me/two"))
    with pytest.raises(BuiltinConflict):
        r.update_model("me/one", model_id=LLAMA8)
    with pytest.raises(RegistryError, match="already a model of yours"):
        r.update_model("me/one", model_id="me/two")
    assert {m.id for m in r.user_models()} == {"me/one", "me/two"}
    r.update_model("me/one", model_id="me/renamed", size_gb=4.0)
    assert {m.id for m in ModelRegistry(user_store=store).user_models()} == {"me/renamed", "me/two"}


@pytest.mark.parametrize("bad", ["has spaces/and/../slashes!!", "a/b/c", "noslash", "me/x--y", " me/pad"])
def test_ids_must_be_hugging_face_ids_or_existing_paths(store, bad):
    r = ModelRegistry(user_store=store)
    with pytest.raises(InvalidModel) as info:
        r.register_model(mine(bad))
    assert info.value.field == "model_id" and "\n" not in str(info.value)
    assert r.get_model(bad) is None and not store.exists()


def test_an_existing_path_is_a_valid_id(store, tmp_path):
    weights = tmp_path / "my model.gguf"
    weights.write_bytes(b"x")
    validate_user_model(mine(str(weights)))
    validate_user_model(mine(str(tmp_path)))
    with pytest.raises(InvalidModel):
        validate_user_model(mine(str(tmp_path / "gone.gguf")))


def test_a_size_is_needed_unless_the_architecture_is_known(store):
    r = ModelRegistry(user_store=store)
    with pytest.raises(InvalidModel) as info:
        r.register_model(mine("me/zero", size_gb=None))
    assert info.value.field == "parameters" and "config.json" in str(info.value)
    arch = dict(layers=2, hidden_size=256, heads=4, kv_heads=2, head_dim=64, vocab_size=1000, max_context=4096)
    meta = r.register_model(mine("me/arch-only", size_gb=None, architecture=arch))
    est = estimate_model(meta, "bf16", context=4096)
    assert est.weights_bytes > 0 and est.kv_cache_bytes > 0


def test_a_user_llm_without_architecture_says_its_kv_cache_is_missing(store):
    r = ModelRegistry(user_store=store)
    meta = r.register_model(mine("me/bare", size_gb=7.0))
    est = estimate_model(meta, "bf16", context=4096)
    assert est.kv_cache_bytes == 0 and "not estimated" in est.kv_cache.explanation
    assert any("lower bound" in n for n in est.notes)


def test_a_scanned_copy_of_a_builtin_is_registered_beside_it(store, tmp_path):
    from app.core.importers import read_gguf
    from tests.core.test_importers import write_llama_gguf

    r = ModelRegistry(user_store=store)
    builtin = r.get_model(LLAMA8)
    scanned = read_gguf(write_llama_gguf(tmp_path / "llama.gguf"))
    from dataclasses import replace

    cached = replace(scanned, format="hf-cache", huggingface_id=LLAMA8)
    meta = r.register_scanned(cached)
    assert r.get_model(LLAMA8) is builtin and meta.id.startswith("file:")
