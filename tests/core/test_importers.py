"""Importers read real files written here: GGUF by gguf.GGUFWriter, safetensors by safetensors.numpy,
a Hugging Face cache laid out as huggingface_hub lays it out. Figures are checked against exact
arithmetic and against gguf.GGUFReader / safetensors.safe_open; hostile files must always end in a
ModelImportError, quickly."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

from app.core.importers import (
    ARCHITECTURE_KEYS,
    ImportErrorKind,
    ModelImportError,
    ScannedModel,
    read_gguf,
    read_safetensors,
    scan_hf_cache,
    scan_path,
)

Q = gguf.GGMLQuantizationType
HIDDEN, FFN, VOCAB = 256, 512, 300

# Bytes and values per tensor of the test model, from ggml's block sizes:
# Q4_K 144 B / 256 values, Q6_K 210 B / 256, Q8_0 34 B / 32.
LLAMA_TENSORS = {
    "token_embd.weight": ("F16", VOCAB * HIDDEN * 2, VOCAB * HIDDEN),
    "blk.0.attn_norm.weight": ("F32", HIDDEN * 4, HIDDEN),
    "blk.0.attn_q.weight": ("Q4_K", HIDDEN * 144, HIDDEN * HIDDEN),
    "blk.0.attn_k.weight": ("Q8_0", 64 * HIDDEN // 32 * 34, 64 * HIDDEN),
    "blk.0.ffn_down.weight": ("Q6_K", HIDDEN * FFN // 256 * 210, HIDDEN * FFN),
    "output.weight": ("Q6_K", VOCAB * 210, VOCAB * HIDDEN),
}

fast = settings(max_examples=60, deadline=500, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def write_llama_gguf(path: Path, *, tie: bool = False, file_type: int | None = 15, name: str | None = "Tiny Llama",
                     endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE, split_max_tensors: int = 0,
                     extra=None) -> Path:
    """A one-layer llama GGUF with F16, F32, Q4_K, Q8_0 and Q6_K tensors."""
    w = gguf.GGUFWriter(path, "llama", endianess=endianess, split_max_tensors=split_max_tensors)
    if name:
        w.add_name(name)
    w.add_block_count(1)
    w.add_context_length(8192)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(8)
    w.add_head_count_kv(2)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(VOCAB)])
    w.add_token_scores([0.0] * VOCAB)
    if extra:
        extra(w)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", np.zeros((VOCAB, HIDDEN), np.float16))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(HIDDEN, np.float32))
    # k-quants cannot be quantized in Python: raw blocks of the right size carry the type and shape.
    w.add_tensor("blk.0.attn_q.weight", np.zeros((HIDDEN, HIDDEN // 256 * 144), np.uint8), raw_dtype=Q.Q4_K)
    q8 = gguf.quants.quantize(rng.standard_normal((64, HIDDEN), dtype=np.float32), Q.Q8_0)
    w.add_tensor("blk.0.attn_k.weight", q8, raw_dtype=Q.Q8_0)
    w.add_tensor("blk.0.ffn_down.weight", np.zeros((HIDDEN, FFN // 256 * 210), np.uint8), raw_dtype=Q.Q6_K)
    if not tie:
        w.add_tensor("output.weight", np.zeros((VOCAB, HIDDEN // 256 * 210), np.uint8), raw_dtype=Q.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def expected(tie: bool = False) -> tuple[int, int, dict[str, int]]:
    by_type: dict[str, int] = {}
    weight = params = 0
    for name, (type_name, n_bytes, n_values) in LLAMA_TENSORS.items():
        if tie and name == "output.weight":
            continue
        by_type[type_name] = by_type.get(type_name, 0) + n_bytes
        weight += n_bytes
        params += n_values
    return weight, params, by_type


def reader_figures(path: Path) -> tuple[int, int, dict[str, int]]:
    reader = gguf.GGUFReader(path)
    by_type: dict[str, int] = {}
    for t in reader.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    figures = sum(by_type.values()), sum(int(t.n_elements) for t in reader.tensors), by_type
    del reader, t
    return figures


# ---------------------------------------------------------------------------------------- GGUF


def test_gguf_figures_are_exact_and_match_gguf_reader(tmp_path):
    path = write_llama_gguf(tmp_path / "tiny.gguf")
    model = read_gguf(path)
    weight, params, by_type = expected()
    assert (model.weight_bytes, model.parameters) == (weight, params) == reader_figures(path)[:2]
    assert dict(model.bytes_by_type) == by_type == reader_figures(path)[2]
    assert model.bytes_by_type == (("Q6_K", 107_520 + 63_000), ("F16", 153_600), ("Q4_K", 36_864),
                                   ("Q8_0", 17_408), ("F32", 1_024))
    assert model.weight_bytes == 379_416 and model.parameters == 366_848
    assert model.format == "gguf" and model.exact and model.name == "Tiny Llama"
    assert model.file_type == "Q4_K_M"
    assert model.files == (str(path),) and model.path == str(path)
    assert model.file_bytes == path.stat().st_size > model.weight_bytes
    assert model.huggingface_id is None
    assert model.architecture == {
        **dict.fromkeys(ARCHITECTURE_KEYS),
        "family": "llama", "layers": 1, "hidden_size": HIDDEN, "intermediate_size": FFN, "heads": 8,
        "kv_heads": 2, "head_dim": HIDDEN // 8, "vocab_size": VOCAB, "max_context": 8192,
        "sliding_window": None, "experts": None, "active_experts": None, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_kind": "gated",  # attn_q without a bias; llama's gated MLP
    }


def test_gguf_tied_embeddings_are_detected_by_the_missing_output_tensor(tmp_path):
    model = read_gguf(write_llama_gguf(tmp_path / "tied.gguf", tie=True))
    weight, params, by_type = expected(tie=True)
    assert (model.weight_bytes, model.parameters, dict(model.bytes_by_type)) == (weight, params, by_type)
    assert model.bytes_by_type[0] == ("F16", 153_600)
    assert model.architecture["tie_word_embeddings"] is True


def test_gguf_optional_architecture_keys(tmp_path):
    def extra(w):
        w.add_key_length(128)
        w.add_sliding_window(4096)
        w.add_expert_count(8)
        w.add_expert_used_count(2)
        w.add_vocab_size(999)  # the token list wins
    arch = read_gguf(write_llama_gguf(tmp_path / "moe.gguf", extra=extra)).architecture
    assert (arch["head_dim"], arch["sliding_window"], arch["experts"], arch["active_experts"]) == (128, 4096, 8, 2)
    assert arch["vocab_size"] == VOCAB


def test_gguf_per_layer_head_counts_report_the_largest(tmp_path):
    path = tmp_path / "elm.gguf"
    w = gguf.GGUFWriter(path, "openelm")
    w.add_head_count([4, 8, 12])
    w.add_head_count_kv([1, 2, 3])
    w.add_tensor("token_embd.weight", np.zeros((10, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    model = read_gguf(path)
    assert (model.architecture["heads"], model.architecture["kv_heads"]) == (12, 3)
    assert model.architecture["vocab_size"] == 10  # from token_embd's shape: no token list
    assert model.name == "elm"
    assert model.file_type == "F32" and "general.file_type missing" in model.notes[0]


@pytest.mark.parametrize(("value", "name"), [(0, "F32"), (1, "F16"), (7, "Q8_0"), (15, "Q4_K_M"), (18, "Q6_K"),
                                             (32, "BF16")])
def test_gguf_file_type_preset_names(tmp_path, value, name):
    assert read_gguf(write_llama_gguf(tmp_path / "m.gguf", file_type=value)).file_type == name
    assert gguf.LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_") == name


def test_gguf_big_endian_file_reads_the_same(tmp_path):
    little = read_gguf(write_llama_gguf(tmp_path / "le.gguf"))
    big = read_gguf(write_llama_gguf(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG))
    assert (big.weight_bytes, big.parameters, big.bytes_by_type, big.architecture) == (
        little.weight_bytes, little.parameters, little.bytes_by_type, little.architecture)


def test_split_gguf_is_one_model_from_any_part(tmp_path):
    write_llama_gguf(tmp_path / "big.gguf", split_max_tensors=2)
    parts = sorted(tmp_path.glob("big-*-of-*.gguf"))
    assert [p.name for p in parts] == [f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    first, last = read_gguf(parts[0]), read_gguf(parts[2])
    assert first == last
    weight, params, by_type = expected()
    assert (first.weight_bytes, first.parameters, dict(first.bytes_by_type)) == (weight, params, by_type)
    assert first.files == tuple(str(p) for p in parts) and first.path == str(parts[0])
    assert first.name == "Tiny Llama" and first.architecture["tie_word_embeddings"] is False
    assert first.file_bytes == sum(p.stat().st_size for p in parts)
    parts[1].unlink()
    with pytest.raises(ModelImportError) as err:
        read_gguf(parts[0])
    assert err.value.kind is ImportErrorKind.NOT_FOUND and "big-00002-of-00003.gguf" in str(err.value)


def test_deep_check_agrees_with_gguf_reader_and_releases_its_map(tmp_path):
    path = write_llama_gguf(tmp_path / "deep.gguf")
    assert read_gguf(path, deep_check=True) == read_gguf(path)
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(path) not in maps.read_text()


def test_deep_check_reports_gguf_reader_failures_and_disagreements(tmp_path, monkeypatch):
    path = write_llama_gguf(tmp_path / "deep.gguf")
    real_reader = gguf.GGUFReader

    class Broken(real_reader):
        def __init__(self, *args, **kwargs):
            raise struct.error("unpack requires a buffer of 8 bytes")

    class Disagreeing(real_reader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.tensors[0] = self.tensors[0]._replace(n_bytes=1)

    for fake, words in ((Broken, "cannot read"), (Disagreeing, "disagree")):
        with monkeypatch.context() as m:
            m.setattr(gguf, "GGUFReader", fake)
            with pytest.raises(ModelImportError) as err:
                read_gguf(path, deep_check=True)
        assert err.value.kind is ImportErrorKind.MALFORMED and words in err.value.message


# ------------------------------------------------------------------------ hostile GGUF headers


def raw_gguf(kv: list[tuple[str, int, bytes]] = (), tensors: list[tuple[str, tuple[int, ...], int, int]] = (), *,
             n_tensors: int | None = None, n_kv: int | None = None, version: int = 3, data: bytes = b"") -> bytes:
    """A GGUF header built byte by byte, so that its counts and lengths can lie."""
    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                len(kv) if n_kv is None else n_kv)
    for key, vtype, payload in kv:
        out += s(key) + struct.pack("<I", vtype) + payload
    for name, dims, ttype, offset in tensors:
        out += s(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ttype, offset)
    return out + b"\0" * (-len(out) % 32) + data


def expect_error(path: Path, reader, kind: ImportErrorKind | None = None) -> ModelImportError:
    start = time.perf_counter()
    with pytest.raises(ModelImportError) as err:
        reader(path)
    assert time.perf_counter() - start < 0.5
    if kind is not None:
        assert err.value.kind is kind, err.value
    assert err.value.path == str(path.resolve()) or err.value.path.startswith(str(path.parent))
    return err.value


@pytest.mark.parametrize(("blob", "kind"), [
    (raw_gguf(n_tensors=2**63), ImportErrorKind.OVERSIZED_HEADER),
    (raw_gguf(n_tensors=1_000_001), ImportErrorKind.OVERSIZED_HEADER),
    (raw_gguf(n_kv=2**40), ImportErrorKind.OVERSIZED_HEADER),
    (raw_gguf(n_tensors=999_999), ImportErrorKind.OVERSIZED_HEADER),  # the limit is 131,072 (2**17)
    (raw_gguf(n_tensors=131_071), ImportErrorKind.TRUNCATED),
    (raw_gguf(n_kv=99_999), ImportErrorKind.TRUNCATED),
    (raw_gguf([("k", 9, struct.pack("<IQ", 8, 2**62))]), ImportErrorKind.TRUNCATED),  # 2**62 strings
    (raw_gguf([("k", 9, struct.pack("<IQ", 12, 2**61))]), ImportErrorKind.TRUNCATED),  # 2**61 doubles
    (raw_gguf([("k", 9, struct.pack("<IQ", 9, 2**60))]), ImportErrorKind.TRUNCATED),  # nested arrays
    (raw_gguf([("k", 8, struct.pack("<Q", 2**64 - 1))]), ImportErrorKind.TRUNCATED),  # string length
    (raw_gguf([("k", 13, b"")]), ImportErrorKind.MALFORMED),  # unknown value type
    (raw_gguf([("k", 4, b"\1\0\0\0"), ("k", 4, b"\1\0\0\0")]), ImportErrorKind.MALFORMED),  # duplicate key
    (raw_gguf([("general.alignment", 4, struct.pack("<I", 3))]), ImportErrorKind.MALFORMED),
    (raw_gguf(tensors=[("t", (2**32,) * 3, 0, 0)]), ImportErrorKind.MALFORMED),  # 2**96 elements
    (raw_gguf(tensors=[("t", (1,) * 200, 0, 0)]), ImportErrorKind.MALFORMED),  # 200 dimensions
    (raw_gguf(tensors=[("t", (4,), 0, 0), ("t", (4,), 0, 32)], data=b"\0" * 64), ImportErrorKind.MALFORMED),
    (raw_gguf(tensors=[("t", (4,), 999, 0)]), ImportErrorKind.UNSUPPORTED),  # unknown ggml type
    (raw_gguf(tensors=[("t", (100,), int(Q.Q4_K), 0)], data=b"\0" * 4096), ImportErrorKind.MALFORMED),  # part block
    (raw_gguf(tensors=[("t", (4,), 0, 7)], data=b"\0" * 64), ImportErrorKind.MALFORMED),  # unaligned offset
    (raw_gguf(tensors=[("t", (1024,), 0, 0)], data=b"\0" * 100), ImportErrorKind.TRUNCATED),  # data cut short
    (raw_gguf(tensors=[("t", (2**62,), 0, 0)]), ImportErrorKind.TRUNCATED),
    (raw_gguf(version=1), ImportErrorKind.UNSUPPORTED),
    (raw_gguf(version=4), ImportErrorKind.UNSUPPORTED),
    (raw_gguf(version=0x7FFF_FFF0), ImportErrorKind.MALFORMED),
    (b"GGML" + b"\0" * 60, ImportErrorKind.MALFORMED),
    (b"GGU", ImportErrorKind.TRUNCATED),
    (b"", ImportErrorKind.TRUNCATED),
])
def test_hostile_gguf_headers_fail_fast_with_the_right_kind(tmp_path, blob, kind):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(blob)
    error = expect_error(path, read_gguf, kind)
    assert str(path) in str(error) and error.message.rstrip().endswith(".")


def test_a_crafted_header_that_is_valid_reads(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(raw_gguf([("general.architecture", 8, struct.pack("<Q", 5) + b"llama")],
                              [("token_embd.weight", (8, 4), 0, 0), ("output.weight", (8, 4), 1, 128)],
                              data=b"\0" * 192))
    model = read_gguf(path)
    assert model.bytes_by_type == (("F32", 128), ("F16", 64)) and model.parameters == 64
    assert model.architecture["tie_word_embeddings"] is False


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> tuple[bytes, int, int]:
    """A valid GGUF, where its tensor data starts, and where the last tensor's data ends (then padding)."""
    path = write_llama_gguf(tmp_path_factory.mktemp("fuzz") / "valid.gguf")
    reader = gguf.GGUFReader(path)
    start, end = reader.data_offset, max(t.data_offset + int(t.n_bytes) for t in reader.tensors)
    del reader
    return path.read_bytes(), start, end


@fast
@given(data=st.data())
def test_every_prefix_of_a_gguf_is_truncated(tmp_path, gguf_bytes, data):
    blob, _, end = gguf_bytes
    n = data.draw(st.one_of(st.integers(0, 64), st.integers(0, len(blob) - 1)), label="prefix")
    path = tmp_path / "prefix.gguf"
    path.write_bytes(blob[:n])
    if n >= end:  # only padding cut: still the whole model
        assert read_gguf(path).weight_bytes == expected()[0]
    else:
        expect_error(path, read_gguf, ImportErrorKind.TRUNCATED)


@fast
@given(data=st.data())
def test_corrupted_gguf_bytes_never_escape_as_other_exceptions(tmp_path, gguf_bytes, data):
    blob = bytearray(gguf_bytes[0])
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        blob[data.draw(st.integers(0, gguf_bytes[1] - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "flipped.gguf"
    path.write_bytes(bytes(blob))
    start = time.perf_counter()
    try:
        assert isinstance(read_gguf(path), ScannedModel)
    except ModelImportError:
        pass
    assert time.perf_counter() - start < 0.5


@fast
@given(blob=st.binary(max_size=512), magic=st.booleans())
def test_random_bytes_are_import_errors(tmp_path, blob, magic):
    for suffix, prefix in ((".gguf", b"GGUF\3\0\0\0"), (".safetensors", b"")):
        path = tmp_path / f"random{suffix}"
        path.write_bytes((prefix if magic else b"") + blob)
        reader = read_gguf if suffix == ".gguf" else read_safetensors
        try:
            assert isinstance(reader(path), ScannedModel)
        except ModelImportError:
            pass


# --------------------------------------------------------------------------------- safetensors


def write_raw_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]], metadata=None) -> Path:
    """A safetensors file with dtypes numpy cannot write (BF16, F8, F4): header JSON, zeroed data."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, n_bytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n_bytes]}
        offset += n_bytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


LLAMA_CONFIG = {
    "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 2048,
    "tie_word_embeddings": False, "_name_or_path": "/home/someone/checkpoints/run7",
}


def test_safetensors_file_with_many_dtypes_is_exact(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    path = folder / "mixed.safetensors"
    save_file({
        "f32": np.zeros((3, 5), np.float32), "f16": np.zeros((7,), np.float16), "i8": np.zeros((2, 2, 2), np.int8),
        "u8": np.zeros((9,), np.uint8), "flag": np.zeros((4,), np.bool_), "i64": np.zeros((3,), np.int64),
        "bf16_bits": np.zeros((6,), np.uint16), "scalar": np.full((), 1.5, np.float64),
    }, str(path))
    model = read_safetensors(path)
    assert dict(model.bytes_by_type) == {"F32": 60, "F16": 14, "I8": 8, "U8": 9, "BOOL": 4, "I64": 24, "U16": 12,
                                         "F64": 8}
    assert model.weight_bytes == 139 and model.parameters == 15 + 7 + 8 + 9 + 4 + 3 + 6 + 1
    assert model.file_type == "F32" and model.format == "safetensors" and model.exact
    assert model.name == "mixed" and model.file_bytes == path.stat().st_size
    with safe_open(str(path), framework="numpy") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    assert sum(int(np.prod(s)) for s in shapes.values()) == model.parameters


def test_safetensors_packed_and_eight_bit_dtypes(tmp_path):
    path = write_raw_safetensors(tmp_path / "fp8.safetensors", {
        "w": ("F8_E4M3", [16, 16], 256), "scale": ("F8_E8M0", [16], 16),
        "packed": ("F4", [8, 32], 128), "bf": ("BF16", [4, 64], 512), "six": ("F6_E2M3", [4], 3),
    })
    with safe_open(str(path), framework="numpy") as f:
        assert {k: f.get_slice(k).get_dtype() for k in f.keys()}["bf"] == "BF16"
    model = read_safetensors(path)
    assert model.bytes_by_type == (("BF16", 512), ("F8_E4M3", 256), ("F4", 128), ("F8_E8M0", 16), ("F6_E2M3", 3))
    assert model.parameters == 256 + 16 + 256 + 256 + 4 and model.file_type == "BF16"


def test_safetensors_with_config_gives_the_architecture(tmp_path):
    folder = tmp_path / "TinyLlama-2L"
    folder.mkdir()
    save_file({"model.embed_tokens.weight": np.zeros((100, 64), np.float16),
               "lm_head.weight": np.zeros((100, 64), np.float16)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    model = read_safetensors(folder)
    assert model.name == "TinyLlama-2L"  # the folder, not a checkpoint path from _name_or_path
    assert model.path == str(folder / "model.safetensors")
    assert model.architecture == {
        **dict.fromkeys(ARCHITECTURE_KEYS),
        "family": "llama", "layers": 2, "hidden_size": 64, "intermediate_size": 128, "heads": 4, "kv_heads": 2,
        "head_dim": 16, "vocab_size": 100, "max_context": 2048, "sliding_window": None, "experts": None,
        "active_experts": None, "tie_word_embeddings": False, "mlp_kind": "gated",
    }
    assert model.weight_bytes == 2 * 100 * 64 * 2 and model.file_type == "F16"


def test_multimodal_config_reads_its_text_config(tmp_path):
    folder = tmp_path / "gemma"
    folder.mkdir()
    save_file({"language_model.model.embed_tokens.weight": np.zeros((4, 8), np.float32)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gemma3", "text_config": {
            "model_type": "gemma3_text", "num_hidden_layers": 34, "hidden_size": 2560, "num_attention_heads": 8,
            "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 1024, "vocab_size": 262208},
        "vision_config": {"hidden_size": 1152}}))
    arch = read_safetensors(folder).architecture
    assert (arch["family"], arch["layers"], arch["hidden_size"], arch["head_dim"]) == ("gemma3", 34, 2560, 256)
    assert (arch["sliding_window"], arch["vocab_size"], arch["kv_heads"]) == (1024, 262208, 4)
    assert arch["tie_word_embeddings"] is True  # embeddings and no lm_head
    assert set(arch) == set(ARCHITECTURE_KEYS)


def test_moe_config_and_disabled_sliding_window(tmp_path):
    folder = tmp_path / "qwen-moe"
    folder.mkdir()
    save_file({"x": np.zeros(1, np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2_moe", "num_experts": 60, "num_experts_per_tok": 4, "sliding_window": 32768,
        "use_sliding_window": False, "num_attention_heads": 16, "hidden_size": 2048}))
    arch = read_safetensors(folder).architecture
    assert (arch["experts"], arch["active_experts"], arch["sliding_window"]) == (60, 4, None)
    assert arch["kv_heads"] == 16 and arch["head_dim"] == 128  # transformers' defaults


@pytest.fixture()
def sharded(tmp_path) -> Path:
    folder = tmp_path / "Sharded-7B"
    folder.mkdir()
    one = {"model.embed_tokens.weight": np.zeros((100, 64), np.float16), "model.norm.weight": np.ones(64, np.float32)}
    two = {"lm_head.weight": np.zeros((100, 64), np.float16), "model.layers.0.w": np.zeros((64, 128), np.int8)}
    save_file(one, str(folder / "model-00001-of-00002.safetensors"))
    save_file(two, str(folder / "model-00002-of-00002.safetensors"))
    weight_map = ({k: "model-00001-of-00002.safetensors" for k in one}
                  | {k: "model-00002-of-00002.safetensors" for k in two})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 12800 + 256 + 12800 + 8192}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    return folder


def test_sharded_safetensors_count_once(sharded):
    model = read_safetensors(sharded)
    assert read_safetensors(sharded / "model.safetensors.index.json") == model
    assert model.path == str(sharded) and model.name == "Sharded-7B"
    assert model.files == tuple(str(sharded / f"model-0000{i}-of-00002.safetensors") for i in (1, 2))
    assert model.weight_bytes == 12800 + 256 + 12800 + 8192 and model.parameters == 6400 + 64 + 6400 + 8192
    assert model.bytes_by_type == (("F16", 25600), ("I8", 8192), ("F32", 256))
    assert model.file_bytes == sum((sharded / f).stat().st_size for f in model.files)
    assert model.notes == ()  # total_size agrees
    single = read_safetensors(sharded / "model-00001-of-00002.safetensors")
    assert single.weight_bytes == 12800 + 256 and "shard 1 of 2" in single.notes[0]


def test_missing_shard_and_hostile_index(sharded):
    (sharded / "model-00002-of-00002.safetensors").unlink()
    error = expect_error(sharded, read_safetensors, ImportErrorKind.NOT_FOUND)
    assert "model-00002-of-00002.safetensors" in error.path
    index = sharded / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    expect_error(index, read_safetensors, ImportErrorKind.MALFORMED)


def safetensors_blob(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(("blob", "kind"), [
    (struct.pack("<Q", 2**62) + b"{}", ImportErrorKind.OVERSIZED_HEADER),
    (struct.pack("<Q", 100 * 1024 * 1024 + 1) + b"{}", ImportErrorKind.OVERSIZED_HEADER),
    (struct.pack("<Q", 4096) + b"{}", ImportErrorKind.TRUNCATED),
    (b"\1\2\3", ImportErrorKind.TRUNCATED),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", ImportErrorKind.MALFORMED),
    (struct.pack("<Q", 3000) + b"[" * 3000, ImportErrorKind.MALFORMED),
    (safetensors_blob([1, 2]), ImportErrorKind.MALFORMED),
    (safetensors_blob({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 8),
     ImportErrorKind.MALFORMED),
    (safetensors_blob({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
     ImportErrorKind.TRUNCATED),
    (safetensors_blob({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
     ImportErrorKind.MALFORMED),
    (safetensors_blob({"t": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4),
     ImportErrorKind.MALFORMED),
    (safetensors_blob({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4),
     ImportErrorKind.MALFORMED),
    (safetensors_blob({"t": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
     ImportErrorKind.UNSUPPORTED),
    (safetensors_blob({"t": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\0" * 2),
     ImportErrorKind.MALFORMED),
    (safetensors_blob({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                       "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6),
     ImportErrorKind.MALFORMED),
    (safetensors_blob({"t": {"dtype": "F32", "shape": [10**20], "data_offsets": [0, 4]}}, b"\0" * 4),
     ImportErrorKind.MALFORMED),
    (struct.pack("<Q", 5030) + b'{"t":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,4]}}',
     ImportErrorKind.MALFORMED),
])
def test_hostile_safetensors_headers_fail_fast_with_the_right_kind(tmp_path, blob, kind):
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(blob)
    expect_error(path, read_safetensors, kind)


@fast
@given(data=st.data())
def test_every_prefix_of_a_safetensors_file_is_truncated(tmp_path, data):
    path = tmp_path / "whole.safetensors"
    if not path.exists():
        save_file({"a": np.arange(40, dtype=np.float32), "b": np.zeros((3, 3), np.float16)}, str(path))
    blob = path.read_bytes()
    n = data.draw(st.integers(0, len(blob) - 1), label="prefix")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(blob[:n])
    expect_error(cut, read_safetensors, ImportErrorKind.TRUNCATED)


@fast
@given(data=st.data())
def test_corrupted_safetensors_bytes_never_escape_as_other_exceptions(tmp_path, data):
    path = tmp_path / "whole.safetensors"
    if not path.exists():
        save_file({"a": np.arange(40, dtype=np.float32), "b": np.zeros((3, 3), np.float16)}, str(path))
    blob = bytearray(path.read_bytes())
    header_end = 8 + struct.unpack("<Q", blob[:8])[0]
    for _ in range(data.draw(st.integers(1, 6), label="flips")):
        blob[data.draw(st.integers(0, header_end - 1))] = data.draw(st.integers(0, 255))
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(blob))
    start = time.perf_counter()
    try:
        read_safetensors(bad)
    except ModelImportError:
        pass
    assert time.perf_counter() - start < 0.5


# ----------------------------------------------------------------------------------- pickles


class _Boom:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_are_registered_by_size_and_never_opened(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "sd15"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # a model's folder: its pickle counts (unverified)
    evil = folder / "v1-5-pruned.ckpt"
    evil.write_bytes(pickle.dumps(_Boom(marker)) + b"\0" * 1000)
    opened: list[str] = []
    real_open = builtins.open

    def spy_open(file, *args, **kwargs):
        opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", spy_open)
        for name in ("load", "loads", "Unpickler"):
            m.setattr(pickle, name, refuse)
        models, errors = scan_path(folder)
        single = scan_path(evil)[0]
    assert errors == [] and single == models
    (model,) = models
    assert model.format == "pytorch-pickle" and not model.exact and model.parameters is None
    assert model.weight_bytes == model.file_bytes == evil.stat().st_size
    assert model.name == "sd15" and model.bytes_by_type == () and model.file_type is None
    assert model.notes[0].startswith("unverified (pickle: not read)") and "not opened" in model.notes[0]
    assert str(evil) not in opened and not marker.exists()
    assert "torch" not in sys.modules


def test_pickle_folder_with_config_and_trainer_leftovers(tmp_path):
    folder = tmp_path / "gpt2-finetune"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 500)
    (folder / "training_args.bin").write_bytes(b"\0" * 50)
    (folder / "optimizer.pt").write_bytes(b"\0" * 70)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12,
                                                    "n_positions": 1024, "vocab_size": 50257}))
    (model,), errors = scan_path(folder)
    assert errors == [] and model.files == (str(folder / "pytorch_model.bin"),)
    assert model.name == "gpt2-finetune" and model.file_bytes == 500
    assert (model.architecture["layers"], model.architecture["hidden_size"], model.architecture["max_context"]) == (
        12, 768, 1024)


# -------------------------------------------------------------------------------- HF cache


def add_cached_repo(hub: Path, repo_id: str, files: dict[str, bytes], revision: str = "a" * 40) -> Path:
    """A repo as huggingface_hub stores it: content-addressed blobs, snapshot symlinks, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for rel, content in files.items():
        blob = repo / "blobs" / f"{abs(hash((repo_id, rel))):040x}"
        blob.write_bytes(content)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture()
def hub(tmp_path) -> Path:
    hub = tmp_path / "cache" / "huggingface" / "hub"
    hub.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    save_file({"model.embed_tokens.weight": np.zeros((100, 64), np.float16),
               "model.norm.weight": np.ones(64, np.float32)}, str(work / "model.safetensors"))
    add_cached_repo(hub, "org/tiny-llama", {
        "model.safetensors": (work / "model.safetensors").read_bytes(),
        "config.json": json.dumps(LLAMA_CONFIG | {"tie_word_embeddings": True}).encode(),
        "pytorch_model.bin": b"\0" * 99,  # the same weights as a pickle: not counted
    })
    write_llama_gguf(work / "q4.gguf", name="Tiny Q4")
    write_llama_gguf(work / "q8.gguf", name="Tiny Q8", file_type=7, tie=True)
    add_cached_repo(hub, "org/tiny-gguf", {"tiny.Q4_K_M.gguf": (work / "q4.gguf").read_bytes(),
                                           "tiny.Q8_0.gguf": (work / "q8.gguf").read_bytes()}, "b" * 40)
    add_cached_repo(hub, "org/sd-pipe", {
        "model_index.json": b"{}",
        "unet/diffusion_pytorch_model.safetensors": (work / "model.safetensors").read_bytes(),
        "vae/diffusion_pytorch_model.safetensors": (work / "model.safetensors").read_bytes(),
    }, "c" * 40)
    return hub


def test_scan_hf_cache_reads_real_cache_layout(hub):
    models = scan_hf_cache(hub)
    by_name = {m.name: m for m in models}
    assert sorted(by_name) == ["Tiny Q4", "Tiny Q8", "org/sd-pipe", "org/tiny-llama"]
    llama = by_name["org/tiny-llama"]
    assert llama.huggingface_id == "org/tiny-llama" and llama.format == "hf-cache" and llama.exact
    assert llama.path == str(hub / "models--org--tiny-llama" / "snapshots" / ("a" * 40))
    assert llama.weight_bytes == 100 * 64 * 2 + 64 * 4 and llama.parameters == 6400 + 64
    assert [Path(f).name for f in llama.files] == ["model.safetensors"]
    assert llama.architecture["family"] == "llama" and llama.architecture["tie_word_embeddings"] is True
    assert "weights: safetensors" in llama.notes and any("refs: main" in n for n in llama.notes)
    assert any("pytorch_model" in n and "not counted" in n for n in llama.notes)
    q4, q8 = by_name["Tiny Q4"], by_name["Tiny Q8"]
    assert q4.huggingface_id == q8.huggingface_id == "org/tiny-gguf" and q4.format == "hf-cache"
    assert (q4.file_type, q8.file_type) == ("Q4_K_M", "Q8_0")
    assert q4.weight_bytes == expected()[0] and q8.weight_bytes == expected(tie=True)[0]
    pipe = by_name["org/sd-pipe"]
    assert len(pipe.files) == 2 and pipe.weight_bytes == 2 * llama.weight_bytes
    assert pipe.architecture == dict.fromkeys(ARCHITECTURE_KEYS)


def test_scan_path_finds_caches_and_single_repos(hub):
    models, errors = scan_path(hub.parent.parent)
    assert errors == [] and {m.huggingface_id for m in models} == {"org/tiny-llama", "org/tiny-gguf", "org/sd-pipe"}
    models, errors = scan_path(hub / "models--org--tiny-llama")
    assert errors == [] and [m.name for m in models] == ["org/tiny-llama"]


def test_missing_or_damaged_caches(tmp_path, hub, monkeypatch):
    with pytest.raises(ModelImportError) as err:
        scan_hf_cache(tmp_path / "nowhere")
    assert err.value.kind is ImportErrorKind.NOT_FOUND
    import huggingface_hub.utils._cache_manager as cache_manager
    monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", str(tmp_path / "no-default-cache"))
    assert scan_hf_cache() == []
    (hub / "models--org--broken" / "snapshots").mkdir(parents=True)
    (hub / "models--org--broken" / "refs").mkdir()
    (hub / "models--org--broken" / "refs" / "main").write_text("f" * 40)  # a ref to a missing snapshot
    errors: list[ModelImportError] = []
    assert len(scan_hf_cache(hub, errors=errors)) == 4
    assert [e.kind for e in errors] == [ImportErrorKind.MALFORMED] and "models--org--broken" in errors[0].message


# ---------------------------------------------------------------------------------- scan_path


def test_scan_path_mixed_folder_collects_models_errors_and_progress(tmp_path, sharded):
    root = sharded.parent
    write_llama_gguf(root / "good.gguf")
    split = root / "split"
    split.mkdir()
    write_llama_gguf(split / "big.gguf", split_max_tensors=3)
    loras = root / "loras"
    loras.mkdir()
    save_file({"a": np.zeros(3, np.float32)}, str(loras / "style-a.safetensors"))
    save_file({"b": np.zeros(5, np.float16)}, str(loras / "style-b.safetensors"))
    (sharded / "pytorch_model.bin").write_bytes(b"\0" * 10)  # duplicate of the safetensors: not counted
    (root / "bad.gguf").write_bytes(b"GGUF\3\0\0\0" + struct.pack("<QQ", 1, 0) + b"\xff" * 4)
    (root / "bad.safetensors").write_bytes(struct.pack("<Q", 2**62))
    # torch.save's zip layout (first entry <name>/data.pkl): a checkpoint even with no config.json beside it
    entry = b"old/data.pkl"
    (root / "old.pt").write_bytes(b"PK\x03\x04" + b"\0" * 22 + len(entry).to_bytes(2, "little") + b"\0\0" + entry
                                  + b"\0" * 85)
    (root / "tutor.pt").write_text("===== Welcome to the VIM Tutor =====\n")  # a .pt that is no model
    (root / "lonely-00001-of-00002.gguf").write_bytes((root / "good.gguf").read_bytes())
    (root / "readme.txt").write_text("not a model")
    calls: list[tuple[int, int, str]] = []
    models, errors = scan_path(root, progress=lambda done, total, path: calls.append((done, total, path)))

    got = {(m.name, m.format) for m in models}
    assert got == {("Tiny Llama", "gguf"), ("Sharded-7B", "safetensors"), ("style-a", "safetensors"),
                   ("style-b", "safetensors"), ("old", "pytorch-pickle")}
    assert sum(m.name == "Tiny Llama" for m in models) == 2  # good.gguf and the 2-part split
    split_model = next(m for m in models if m.path.endswith("big-00001-of-00002.gguf"))
    assert len(split_model.files) == 2 and split_model.weight_bytes == expected()[0]
    sharded_model = next(m for m in models if m.name == "Sharded-7B")
    assert len(sharded_model.files) == 2 and any("pytorch_model" in n for n in sharded_model.notes)
    kinds = {Path(e.path).name: e.kind for e in errors}
    assert kinds == {"bad.gguf": ImportErrorKind.TRUNCATED, "bad.safetensors": ImportErrorKind.OVERSIZED_HEADER,
                     "lonely-00002-of-00002.gguf": ImportErrorKind.NOT_FOUND,
                     "tutor.pt": ImportErrorKind.NOT_A_MODEL}
    assert all(isinstance(e, ModelImportError) and e.message for e in errors)

    total = calls[0][1]
    assert [c[0] for c in calls] == list(range(1, total + 1)) and {c[1] for c in calls} == {total}
    assert total == 1 + 2 + 2 + 2 + 1 + 1 + 1 + 1  # good, split, shards, loras, bad x2, old.pt, lonely part 1
    assert {Path(c[2]).name for c in calls} >= {"good.gguf", "old.pt", "bad.gguf", "style-b.safetensors"}


def test_scan_path_errors_are_collected_not_raised(tmp_path):
    models, errors = scan_path(tmp_path / "does-not-exist")
    assert models == [] and [e.kind for e in errors] == [ImportErrorKind.NOT_FOUND]
    (tmp_path / "notes.txt").write_text("hi")
    models, errors = scan_path(tmp_path / "notes.txt")
    assert models == [] and [e.kind for e in errors] == [ImportErrorKind.UNSUPPORTED]


def test_unreadable_file_is_a_permission_error(tmp_path, monkeypatch):
    locked = write_llama_gguf(tmp_path / "locked.gguf")
    write_llama_gguf(tmp_path / "open.gguf")
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # chmod 0 does not stop root, so refuse here
        if os.fspath(file) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", guarded_open)
        models, errors = scan_path(tmp_path)
    assert [m.path for m in models] == [str(tmp_path / "open.gguf")]
    assert [(e.kind, e.path) for e in errors] == [(ImportErrorKind.PERMISSION, str(locked))]
    assert "read access" in errors[0].message


def test_importing_the_module_stays_cheap():
    code = ("import sys, app.core.importers\n"
            "print(sorted(m for m in ('gguf', 'huggingface_hub', 'safetensors', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_progress_may_cancel_a_scan(tmp_path):
    for i in range(3):
        write_llama_gguf(tmp_path / f"m{i}.gguf")

    class Cancelled(Exception):
        pass

    calls = []

    def cancel(done, total, path):
        calls.append(done)
        raise Cancelled

    with pytest.raises(Cancelled):
        scan_path(tmp_path, progress=cancel)
    assert calls == [1]


def test_import_error_says_what_to_do_and_survives_pickling(tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(b"\1")
    error = expect_error(path, read_safetensors, ImportErrorKind.TRUNCATED)
    assert "download" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.kind, str(copy)) == (error.path, error.kind, str(error))
    assert ImportErrorKind.TRUNCATED == "truncated"


def test_importers_never_touch_torch_or_pickle():
    source = (Path(__file__).resolve().parents[2] / "app" / "core" / "importers.py").read_text()
    imports = [line.strip() for line in source.splitlines() if line.strip().startswith(("import ", "from "))]
    assert not [line for line in imports if "torch" in line or "pickle" in line]


def test_header_readers_refuse_pickles_by_name(tmp_path, monkeypatch):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"GGUF")
    with monkeypatch.context() as m:
        m.setattr(builtins, "open", lambda *a, **k: pytest.fail("opened a pickle"))
        for reader in (read_gguf, read_safetensors):
            with pytest.raises(ModelImportError) as err:
                reader(path)
            assert err.value.kind is ImportErrorKind.UNSUPPORTED and "never opens" in err.value.message


def test_empty_index_and_odd_alignment_are_malformed(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {}}))
    expect_error(index, read_safetensors, ImportErrorKind.MALFORMED)
    models, errors = scan_path(tmp_path)
    assert models == [] and [e.kind for e in errors] == [ImportErrorKind.MALFORMED]
    path = tmp_path / "align.gguf"
    path.write_bytes(raw_gguf([("general.alignment", 6, struct.pack("<f", 32.5))]))
    expect_error(path, read_gguf, ImportErrorKind.MALFORMED)
