"""ModelRegistry: catalog, validation, lookup, search, and user models that are never lost."""

from __future__ import annotations

import json
import math
import os

import pytest
from pydantic import ValidationError

from app.core.hardware.snapshot import GpuDevice, HardwareProfile, HostMemory
from app.core.model_registry import (
    ModelMetadata,
    ModelProvider,
    ModelRegistry,
    ModelType,
    RegistryError,
    UserModelStore,
    load_catalog,
)

GiB = 1 << 30


def llama70(**kw):
    data = dict(name="Llama 3.3 70B", provider=ModelProvider.LLAMA, model_type=ModelType.LLM, size_gb=70.0,
                min_vram_gb=24.0, min_ram_gb=32.0, recommended_vram_gb=40.0, recommended_ram_gb=64.0,
                supports_quantization=True, huggingface_id="meta-llama/Llama-3.3-70B")
    data.update(kw)
    return ModelMetadata(**data)


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "data" / "models.json"


def test_catalog_is_real_and_sourced():
    models = load_catalog()
    assert len(models) >= 40
    assert len({m.id for m in models}) == len(models)
    assert all(m.source and m.source.startswith("https://") for m in models)
    types = {m.model_type for m in models}
    assert types == set(ModelType)
    for m in models:
        if m.model_type == ModelType.LLM:
            a = m.estimation_architecture
            assert a is not None, m.id
            # The architecture accounts for the published parameter count (within 3%; vision
            # towers of multimodal models are the known exception).
            if m.parameters_exact and "gemma-3" not in m.id:
                assert a.parameter_count() == pytest.approx(m.parameters, rel=0.03), m.id
        assert m.min_vram_gb is None or m.min_vram_gb <= m.recommended_vram_gb


def test_seed_ids_resolve_to_real_models():
    r = ModelRegistry(user_store=None)
    assert r.get_model("mistralai/Ministral-8B-v0.1").id == "mistralai/Ministral-8B-Instruct-2410"
    assert r.get_model("mistralai/Magistral-23B-v0.1").id == "mistralai/Magistral-Small-2506"


def test_lookup_by_alias_and_normalized_alias():
    r = ModelRegistry(user_store=None)
    llama = r.get_model("meta-llama/Llama-3.1-8B-Instruct")
    assert r.get_model("llama3.1:8b") is llama
    assert r.get_model("LLAMA-3.1-8B-INSTRUCT") is llama  # normalized: case and punctuation ignored
    assert r.get_model("Llama 3.1 8B Instruct") is llama
    assert r.get_model("no-such-model") is None


def test_filters_by_type_and_provider():
    r = ModelRegistry(user_store=None)
    whispers = r.list_models(ModelProvider.WHISPER, ModelType.SPEECH_TO_TEXT)
    assert len(whispers) >= 5 and all(m.provider == ModelProvider.WHISPER for m in whispers)
    assert all(m.model_type == ModelType.TEXT_TO_IMAGE for m in r.list_models(model_type="text_to_image"))


def test_search_words_and_typos():
    r = ModelRegistry(user_store=None)
    hits = [m.id for m in r.search("llama 8b")]
    assert "meta-llama/Llama-3.1-8B-Instruct" in hits
    assert all("8b" in m.search_text() and "llama" in m.search_text() for m in r.search("llama 8b"))
    typo = [m.id for m in r.search("whispr larg")]
    assert typo and all("whisper" in t for t in typo)
    assert r.search("   ") == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"size_gb": -1.0}, "size_gb"),
        ({"size_gb": math.nan}, "size_gb"),
        ({"min_vram_gb": 50.0}, "min_vram_gb"),
        ({"model_type": "hologram"}, "model_type"),
        ({"parameters": 0}, "parameters"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ValidationError) as err:
        llama70(**changes)
    assert field in str(err.value)


def test_provider_outside_the_enum_is_kept():
    m = llama70(provider="Acme Labs", huggingface_id="acme/model-1")
    assert m.provider == "acme labs" and m.provider_name == "acme labs"
    assert llama70(provider="mistral").provider is ModelProvider.MISTRAL


def test_seed_registration_is_persisted_and_reloaded(store_path):
    r = ModelRegistry(user_store=store_path)
    r.register_model(llama70())
    assert r.get_model("meta-llama/Llama-3.3-70B").name == "Llama 3.3 70B"
    doc = json.loads(store_path.read_text())
    assert doc["version"] == 1 and [m["huggingface_id"] for m in doc["models"]] == ["meta-llama/Llama-3.3-70B"]
    again = ModelRegistry(user_store=store_path)
    assert again.get_model("meta-llama/Llama-3.3-70B").recommended_vram_gb == 40.0
    assert again.get_model("meta-llama/Llama-3.3-70B").origin == "user"


def test_update_and_remove(store_path):
    r = ModelRegistry(user_store=store_path)
    r.register_model(llama70())
    r.update_model("meta-llama/Llama-3.3-70B", recommended_vram_gb=48.0)
    assert ModelRegistry(user_store=store_path).get_model("meta-llama/Llama-3.3-70B").recommended_vram_gb == 48.0
    with pytest.raises(ValidationError):
        r.update_model("meta-llama/Llama-3.3-70B", min_vram_gb=-3)
    r.remove_model("meta-llama/Llama-3.3-70B")
    assert ModelRegistry(user_store=store_path).get_model("meta-llama/Llama-3.3-70B") is None
    with pytest.raises(RegistryError, match="built in"):
        r.remove_model("meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(RegistryError, match="no model"):
        r.update_model("nope/nope", name="x")


def test_registry_changed_event(store_path):
    r = ModelRegistry(user_store=store_path)
    seen = []
    r.registry_changed.connect(lambda: seen.append(1))
    r.register_model(llama70())
    r.remove_model("meta-llama/Llama-3.3-70B")
    assert len(seen) == 2


def test_corrupted_file_is_kept_as_backup_and_builtins_still_load(store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text("{ this is not json")
    r = ModelRegistry(user_store=store_path)
    assert len(r.models) >= 40
    assert r.problems and "could not be read" in r.problems[0]
    backups = list(store_path.parent.glob("models.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == "{ this is not json"
    r.register_model(llama70())  # saving afresh never touches the backup
    assert backups[0].read_text() == "{ this is not json"


def test_invalid_entries_are_kept_verbatim(store_path):
    store_path.parent.mkdir(parents=True)
    good = llama70().model_dump(mode="json", exclude_none=True)
    bad = dict(good, huggingface_id="x/bad", size_gb=-5)
    store_path.write_text(json.dumps({"version": 1, "models": [good, bad]}))
    r = ModelRegistry(user_store=store_path)
    assert r.get_model("x/bad") is None and r.get_model("meta-llama/Llama-3.3-70B") is not None
    assert "size_gb" in r.problems[0]
    r.register_model(llama70(huggingface_id="y/other"))
    saved = json.loads(store_path.read_text())
    assert saved["invalid"] == [bad]


def test_newer_file_version_is_not_overwritten(store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text(json.dumps({"version": 99, "models": []}))
    r = ModelRegistry(user_store=store_path)
    assert "unsupported version" in r.problems[0]
    assert list(store_path.parent.glob("models.json.corrupt-*"))


def test_a_crash_mid_write_leaves_the_previous_file(store_path, monkeypatch):
    r = ModelRegistry(user_store=store_path)
    r.register_model(llama70())
    before = store_path.read_bytes()

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        r.register_model(llama70(huggingface_id="z/new"))
    monkeypatch.undo()
    assert store_path.read_bytes() == before
    assert [p.name for p in store_path.parent.iterdir()] == ["models.json"]  # no temp file left behind


def test_store_without_file_is_empty(tmp_path):
    assert UserModelStore(tmp_path / "none.json").load() == []


def machine(free_gib: float) -> HardwareProfile:
    gpu = GpuDevice(index=0, name="G", kind="simulated", total_bytes=int(free_gib * GiB), used_bytes=0,
                    free_bytes=int(free_gib * GiB), compute_capability=(8, 9))
    return HardwareProfile(0.0, (gpu,), HostMemory(64 * GiB, 64 * GiB, 0))


def test_fits_and_select_best_model():
    r = ModelRegistry(user_store=None)
    big = machine(24.0)
    small = machine(4.0)
    fitting = r.list_models(model_type=ModelType.LLM, fits=lambda m: r.fits(m, big))
    assert "meta-llama/Llama-3.1-8B-Instruct" in [m.id for m in fitting]
    assert "meta-llama/Llama-3.1-70B-Instruct" not in [m.id for m in fitting]
    best = r.select_best_model(ModelProvider.QWEN, ModelType.LLM, big)
    assert best is not None and r.fits(best, big)
    qwen_llms = r.list_models(ModelProvider.QWEN, ModelType.LLM)
    assert all((m.parameter_count or 0) <= best.parameter_count for m in qwen_llms if r.fits(m, big))
    tiny = r.select_best_model(ModelProvider.QWEN, ModelType.LLM, small)
    assert tiny is not None and tiny.parameter_count < best.parameter_count
    assert r.select_best_model(ModelProvider.LLAMA, ModelType.LLM, machine(0.5)) is None
