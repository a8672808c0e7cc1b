"""The built-in catalog's facts: every entry can be estimated, a pipeline's parts add up to its total,
and every figure says where it came from."""

from __future__ import annotations

import pytest

from app.core.model_registry import ModelMetadata, ModelType, load_catalog, missing_facts

CATALOG = load_catalog()
WITH_PARTS = [m for m in CATALOG if m.architecture and m.architecture.components]
NO_SIZE = "no parameter count or size"


def test_every_entry_can_be_estimated():
    cannot = {m.id: missing_facts(m) for m in CATALOG if any(f.startswith(NO_SIZE) for f in missing_facts(m))}
    assert cannot == {}


def test_every_entry_lacks_nothing():
    assert {m.id: missing_facts(m) for m in CATALOG if missing_facts(m)} == {}


@pytest.mark.parametrize("model", WITH_PARTS, ids=lambda m: m.id)
def test_parts_add_up_to_the_whole_pipeline(model: ModelMetadata):
    assert model.architecture is not None and model.architecture.components
    assert sum(model.architecture.components.values()) == model.parameters
    assert model.source and model.source.startswith("https://") and model.quality_note


def test_pipelines_and_speech_models_have_their_parts():
    for model in CATALOG:
        parts = set(model.architecture.components or {}) if model.architecture else set()
        if model.model_type in (ModelType.TEXT_TO_IMAGE, ModelType.TEXT_TO_VIDEO):
            assert parts & {"unet", "transformer"} and "vae" in parts and "text_encoder" in parts, model.id
        elif model.model_type == ModelType.SPEECH_TO_TEXT:
            assert parts == {"encoder", "decoder"}, model.id


@pytest.mark.parametrize(("model_id", "parts"), [
    ("suno/bark", {"text", "coarse", "fine", "codec"}),
    ("suno/bark-small", {"text", "coarse", "fine", "codec"}),
    ("coqui/XTTS-v2", {"gpt", "hifigan"}),
])
def test_speech_synthesis_entries_that_had_no_size(model_id, parts):
    model = next(m for m in CATALOG if m.id == model_id)
    assert model.parameters and model.parameter_count == model.parameters and model.min_vram_gb
    assert model.architecture is not None and set(model.architecture.components or {}) == parts
    assert not model.parameters_exact  # counted from the published configuration, not from the weights


def test_published_component_figures():
    """Figures checked against their published sources (see each entry's source)."""
    sdxl = next(m for m in CATALOG if m.id == "stabilityai/stable-diffusion-xl-base-1.0")
    assert sdxl.architecture is not None and sdxl.architecture.components == {
        "unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840, "vae": 83_653_863}
    tiny = next(m for m in CATALOG if m.id == "openai/whisper-tiny")
    assert tiny.parameters == 37_760_640 and tiny.parameters_exact


def test_missing_facts_in_words():
    bare = ModelMetadata(name="Mystery", provider="other", model_type=ModelType.LLM, model_id="org/mystery")
    facts = missing_facts(bare)
    assert facts[0].startswith(NO_SIZE) and "`parameters`" in facts[0] and "modeldeck scan" in facts[0]
    assert any(f.startswith("no architecture (layers, KV heads, head size)") and "KV cache" in f for f in facts)
    image = ModelMetadata(name="Pic", provider="other", model_type=ModelType.TEXT_TO_IMAGE, model_id="org/pic",
                          parameters=10**9)
    assert missing_facts(image) == [next(f for f in missing_facts(image) if "per part" in f)]
