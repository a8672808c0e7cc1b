"""Hardening found by fuzzing: no file and no declared number may hang ModelDeck, crash it with a
traceback, or make it accept nonsense. Each case writes the real file (GGUF by gguf.GGUFWriter or
byte by byte, safetensors, a FIFO, a sparse file) and runs the reader under a time bound, so that a
regression fails here instead of hanging the suite."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core import estimation, importers
from app.core.estimation import Architecture, estimate_llm, kv_cache_bytes, weight_bytes
from app.core.importers import ImportErrorKind, ModelImportError, ScannedModel, read_gguf, read_safetensors, scan_path

BOUND_S = 2.0


def bounded(fn: Callable[[], Any], seconds: float = BOUND_S, unblock: Callable[[], None] | None = None) -> Any:
    """fn() in a daemon thread: its result, or the exception it raised; fails the test if it runs longer
    than `seconds` (then `unblock` releases a thread stuck in a FIFO, so the suite goes on)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    start = time.perf_counter()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    elapsed = time.perf_counter() - start
    if worker.is_alive():
        if unblock is not None:
            unblock()
        pytest.fail(f"still running after {seconds} s: hung", pytrace=False)
    if "error" in box:
        raise box["error"]
    assert elapsed < seconds
    return box["value"]


def scan_errors(path: Path) -> list[ModelImportError]:
    models, errors = bounded(lambda: scan_path(path))
    assert models == [], models
    return errors


def registrable(model: ScannedModel) -> None:
    """What `modeldeck scan` does with a model the importer returns must not raise."""
    from app.core.model_registry import metadata_from_scan
    from app.core.quantization_strategy import fill_requirements

    fill_requirements(metadata_from_scan(model))


def write_gguf(path: Path, *, block_count: int | None = 2, arch_numbers: dict[str, int] | None = None,
               tensors: dict[str, np.ndarray] | None = None, tokens: int = 16) -> Path:
    """A small llama GGUF written by gguf.GGUFWriter, with chosen architecture numbers (u32 or u64)."""
    w = gguf.GGUFWriter(path, "llama")
    numbers = {"embedding_length": 64, "attention.head_count": 4, "context_length": 2048,
               "feed_forward_length": 256}
    if block_count is not None:
        numbers["block_count"] = block_count
    numbers.update(arch_numbers or {})
    for key, value in numbers.items():
        (w.add_uint64 if value >= 2**32 else w.add_uint32)(f"llama.{key}", value)
    if tokens:
        w.add_token_list([f"<t{i}>" for i in range(tokens)])
    for name, array in (tensors if tensors is not None else {"token_embd.weight": np.zeros((16, 64), np.float32)}
                        ).items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def raw_header(kv: bytes = b"", n_kv: int = 0, tensors: bytes = b"", n_tensors: int = 0) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kv + tensors
    return out + b"\0" * (-len(out) % 32)


def tensor_info(name: str, dims: tuple[int, ...], ttype: int = 0, offset: int = 0) -> bytes:
    return s(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ttype, offset)


# ------------------------------------------------------------------ 1 and 2: layers and estimation


def test_the_more_bits_count_is_llama_cpps_rule_in_closed_form():
    def rule(n: int) -> int:  # llama.cpp's use_more_bits, layer by layer
        return sum(1 for i in range(n) if i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2)

    assert [estimation._more_bits_layers(n) for n in range(0, 1500)] == [rule(n) for n in range(0, 1500)]
    assert bounded(lambda: estimation._more_bits_layers(10**15)) > 0  # O(1): the rule walked 10**15 layers


def test_a_gguf_declaring_four_billion_layers_is_refused_at_once(tmp_path):
    """Was: `modeldeck scan` hung (the estimator looped over 2**32 - 1 layers while registering it)."""
    path = write_gguf(tmp_path / "layers.gguf", block_count=2**32 - 1)
    (error,) = scan_errors(tmp_path)
    assert error.path == str(path) and error.kind is ImportErrorKind.MALFORMED
    assert "llama.block_count is 4,294,967,295" in error.message and "10,000" in error.message


@pytest.mark.parametrize(("key", "value", "words"), [
    ("block_count", 10_001, "llama.block_count is 10,001"),
    ("block_count", 0, "llama.block_count is 0"),
    ("embedding_length", 2**21, "llama.embedding_length is 2,097,152"),
    ("embedding_length", 0, "llama.embedding_length is 0"),
    ("attention.head_count", 100_001, "llama.attention.head_count is 100,001"),
    ("attention.head_count_kv", 2**40, "llama.attention.head_count_kv is 1,099,511,627,776"),
    ("context_length", 2**32 - 1, "llama.context_length is 4,294,967,295"),
    ("context_length", 0, "llama.context_length is 0"),
    ("feed_forward_length", 2**23, "llama.feed_forward_length is 8,388,608"),
    ("expert_count", 2**21, "llama.expert_count is 2,097,152"),
    ("attention.key_length", 2**17, "llama.attention.key_length is 131,072"),
])
def test_architecture_numbers_outside_physical_ranges_name_the_key_and_the_file(tmp_path, key, value, words):
    path = write_gguf(tmp_path / "m.gguf", arch_numbers={key: value})
    with pytest.raises(ModelImportError) as err:
        bounded(lambda: read_gguf(path))
    assert err.value.kind is ImportErrorKind.MALFORMED and err.value.path == str(path)
    assert words in err.value.message and "outside the physical range" in err.value.message
    assert scan_errors(tmp_path)[0].message == err.value.message


def test_a_declared_vocabulary_beyond_ten_million_is_refused(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", arch_numbers={"vocab_size": 10_000_001}, tokens=0,
                      tensors={"blk.0.attn_norm.weight": np.ones(64, np.float32)})
    with pytest.raises(ModelImportError, match="llama.vocab_size is 10,000,001"):
        bounded(lambda: read_gguf(path))


def test_zero_heads_of_attention_free_models_mean_unused_and_still_register(tmp_path):
    """llama.cpp writes head_count 0 (and feed_forward_length 0) for Mamba and RWKV: not an error, but
    never a 0 that pydantic refuses (was: a ValidationError traceback from `modeldeck scan`)."""
    path = write_gguf(tmp_path / "mamba.gguf",
                      arch_numbers={"attention.head_count": 0, "attention.head_count_kv": 0,
                                    "feed_forward_length": 0, "attention.key_length": 0})
    model = bounded(lambda: read_gguf(path))
    arch = model.architecture
    assert (arch["heads"], arch["kv_heads"], arch["intermediate_size"], arch["head_dim"]) == (None,) * 4
    assert arch["layers"] == 2 and arch["hidden_size"] == 64
    registrable(model)


def test_estimation_refuses_out_of_range_numbers_with_a_clear_value_error():
    """Was: `estimate --layers 1e12` hung in the per-layer loop; now the estimator itself refuses."""
    with pytest.raises(ValueError, match=r"architecture layers is 1,000,000,000,000: it must be between 1 and 10,000"):
        bounded(lambda: estimate_llm("Q4_K_M", architecture=Architecture(layers=10**12, hidden_size=4096, heads=32),
                                     context=4096))
    for name, limit in estimation.ARCHITECTURE_LIMITS.items():
        base = {"layers": 2, "hidden_size": 64, "heads": 4}
        with pytest.raises(ValueError, match=f"architecture {name} is {limit + 1:,}"):
            Architecture(**{**base, name: limit + 1})
        with pytest.raises(ValueError, match=f"architecture {name} is 0"):
            Architecture(**{**base, name: 0})
    with pytest.raises(ValueError, match="whole number"):
        Architecture(layers=2.5, hidden_size=64, heads=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a 3,322-bit number"):
        Architecture(layers=10**1000, hidden_size=64, heads=4)
    with pytest.raises(ValueError, match="parameter count"):
        weight_bytes("Q4_K_M", parameters=10**16)
    with pytest.raises(ValueError, match="parameter count"):
        Architecture(layers=2, hidden_size=64, heads=4).with_parameters(10**400)
    with pytest.raises(ValueError, match="context"):
        kv_cache_bytes(Architecture(layers=2, hidden_size=64, heads=4), 10**12)
    with pytest.raises(ValueError, match="context"):
        estimate_llm("fp16", parameters=10**9, context=10**300)


def test_estimation_at_every_limit_at_once_is_instant():
    """O(1) in every number: the largest architecture allowed is estimated as fast as a tiny one."""
    limits = estimation.ARCHITECTURE_LIMITS
    huge = Architecture(**{k: v for k, v in limits.items() if k not in ("kv_lora_rank", "qk_rope_head_dim")})
    for quant in ("Q4_K_M", "Q5_K_M", "IQ3_M", "Q2_K_S", "fp16", "nf4"):
        est = bounded(lambda quant=quant: estimate_llm(quant, architecture=huge, context=limits["max_context"]),
                      seconds=1.0)
        assert est.total_bytes > 0 and est.explain()


def test_the_two_limit_tables_agree():
    for key, limit in importers.ARCHITECTURE_LIMITS.items():
        assert estimation.ARCHITECTURE_LIMITS[key] == limit, key


# --------------------------------------------------------------------- 3: FIFOs, devices, links


def test_fifos_named_like_models_are_skipped_with_a_reason_not_opened(tmp_path):
    """Was: `scan` blocked forever in open() on a FIFO named model.gguf."""
    fifos = [tmp_path / n for n in ("model.gguf", "model.safetensors", "weights.safetensors.index.json")]
    for fifo in fifos:
        os.mkfifo(fifo)

    def unblock() -> None:  # a reader stuck in open() returns once a writer appears
        for fifo in fifos:
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))

    models, errors = bounded(lambda: scan_path(tmp_path), unblock=unblock)
    assert models == []
    assert sorted(e.path for e in errors) == sorted(str(f) for f in fifos)
    assert all(e.kind is ImportErrorKind.UNSUPPORTED and "named pipe (FIFO)" in e.message for e in errors)
    for reader, fifo in ((read_gguf, fifos[0]), (read_safetensors, fifos[1])):
        with pytest.raises(ModelImportError, match="not a regular file"):
            bounded(lambda reader=reader, fifo=fifo: reader(fifo), unblock=unblock)
    models, errors = bounded(lambda: scan_path(fifos[0]), unblock=unblock)
    assert models == [] and "named pipe" in errors[0].message


def test_links_are_followed_once_and_loops_and_devices_are_errors(tmp_path):
    real = write_gguf(tmp_path / "real.gguf")
    (tmp_path / "link.gguf").symlink_to(real)
    (tmp_path / "loop-a.gguf").symlink_to(tmp_path / "loop-b.gguf")
    (tmp_path / "loop-b.gguf").symlink_to(tmp_path / "loop-a.gguf")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "to-pipe.safetensors").symlink_to(tmp_path / "pipe")
    models, errors = bounded(lambda: scan_path(tmp_path))
    assert sorted(os.path.basename(m.path) for m in models) == ["link.gguf", "real.gguf"]
    by_name = {os.path.basename(e.path): e for e in errors}
    assert set(by_name) == {"loop-a.gguf", "loop-b.gguf", "to-pipe.safetensors"}
    assert "symbolic link that never reaches a file" in by_name["loop-a.gguf"].message
    assert "named pipe" in by_name["to-pipe.safetensors"].message
    if os.path.exists("/dev/zero"):  # a device never ends: refused before it is opened
        with pytest.raises(ModelImportError, match="character device"):
            bounded(lambda: read_gguf("/dev/zero"))


# ----------------------------------------------------------- 4: metadata counts, lengths, reads


def sparse(path: Path, header: bytes, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(size)
    return path


def test_a_sparse_gguf_declaring_a_hundred_million_strings_is_refused_in_milliseconds(tmp_path):
    """Was: an 800 MB sparse file was walked string by string for 19 s and accepted (vocab 100,000,000)."""
    head = raw_header(s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 10**8), n_kv=1)
    path = sparse(tmp_path / "vocab.gguf", head, len(head) + 8 * 10**8 + 64)
    start = time.perf_counter()
    with pytest.raises(ModelImportError) as err:
        bounded(lambda: read_gguf(path))
    assert time.perf_counter() - start < 0.2
    assert err.value.kind is ImportErrorKind.OVERSIZED_HEADER
    assert "100,000,000 strings in 'tokenizer.ggml.tokens'" in err.value.message and "4,194,304" in err.value.message


def test_nested_arrays_and_many_string_arrays_share_one_budget(tmp_path):
    nested = raw_header(s("k") + struct.pack("<IIQ", 9, 9, 10**8), n_kv=1)
    path = sparse(tmp_path / "nested.gguf", nested, len(nested) + 12 * 10**8)
    with pytest.raises(ModelImportError, match="nested arrays") as err:
        bounded(lambda: read_gguf(path))
    assert err.value.kind is ImportErrorKind.OVERSIZED_HEADER
    # Two string arrays, each under the limit, together over it: refused before the second is walked.
    second = importers.MAX_GGUF_WALKED_ITEMS - 50
    head = raw_header(s("a") + struct.pack("<IIQ", 9, 8, 100) + b"\0" * 800
                      + s("b") + struct.pack("<IIQ", 9, 8, second), n_kv=2)
    path = sparse(tmp_path / "two.gguf", head, len(head) + 8 * second + 64)
    with pytest.raises(ModelImportError, match="4,194,354 strings and arrays in all"):
        bounded(lambda: read_gguf(path), seconds=0.5)


def test_the_bytes_a_header_makes_us_read_are_capped(tmp_path):
    """Forty 8 MiB strings in a sparse file: each is within limits, but reading them all is not."""
    n, length = 40, 8 * 1024 * 1024
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<IIQ", 9, 8, n)
    path = tmp_path / "long.gguf"
    with open(path, "wb") as f:
        f.write(head)
        for _ in range(n):
            f.write(struct.pack("<Q", length))
            f.seek(length, os.SEEK_CUR)
        f.truncate(f.tell() + 64)
    with pytest.raises(ModelImportError, match="more than 268,435,456 bytes read") as err:
        bounded(lambda: read_gguf(path))
    assert err.value.kind is ImportErrorKind.OVERSIZED_HEADER


# ---------------------------------------------------- 5: zeros and numbers too long to print


def test_files_without_weights_are_not_models(tmp_path):
    write_gguf(tmp_path / "vocab-only.gguf", tensors={})
    write_gguf(tmp_path / "empty-shapes.gguf", tensors={"token_embd.weight": np.zeros((0, 64), np.float32)})
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    (tmp_path / "empty.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    errors = {os.path.basename(e.path): e for e in scan_errors(tmp_path)}
    assert errors["vocab-only.gguf"].kind is ImportErrorKind.UNSUPPORTED
    assert "holds no tensors" in errors["vocab-only.gguf"].message
    assert "hold no values" in errors["empty-shapes.gguf"].message
    assert "holds no tensors" in errors["empty.safetensors"].message


def test_a_shape_whose_byte_count_has_thousands_of_digits_is_one_clear_error(tmp_path):
    """Was: ValueError ('Exceeds the limit (4300 digits) for integer string conversion') out of scan_path."""
    big = 10**1400
    for name, shape in (("digits", [big, big, big, big]), ("zero", [0, big]), ("dims", [1] * 65)):
        header = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}}).encode()
        (tmp_path / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    errors = {os.path.basename(e.path): e for e in scan_errors(tmp_path)}
    assert set(errors) == {"digits.safetensors", "zero.safetensors", "dims.safetensors"}
    assert all(e.kind is ImportErrorKind.MALFORMED and len(e.message) < 400 for e in errors.values())
    assert "a 4,651-bit number, over 2**63" in errors["digits.safetensors"].message
    assert "65 dimensions" in errors["dims.safetensors"].message


def test_an_absurd_config_json_is_not_used_and_says_why(tmp_path):
    from safetensors.numpy import save_file

    save_file({"model.embed_tokens.weight": np.zeros((8, 4), np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_hidden_layers": 10**30, "hidden_size": 64, "num_attention_heads": 0}))
    model = bounded(lambda: read_safetensors(tmp_path / "model.safetensors"))
    assert model.architecture["layers"] is None and model.architecture["tie_word_embeddings"] is True
    assert any("config.json not used: num_hidden_layers is 1,000,000,000,000,000,000,000,000,000,000" in n
               for n in model.notes)
    registrable(model)


def test_an_unforeseen_failure_is_still_one_error_per_file(tmp_path, monkeypatch):
    write_gguf(tmp_path / "a.gguf")
    write_gguf(tmp_path / "b.gguf")
    real = importers._gguf_model

    def broken(headers):
        if headers[0].path.endswith("a.gguf"):
            raise TypeError("an unforeseen bug")
        return real(headers)

    monkeypatch.setattr(importers, "_gguf_model", broken)
    models, errors = bounded(lambda: scan_path(tmp_path))
    assert [os.path.basename(m.path) for m in models] == ["b.gguf"]
    assert [(e.kind, os.path.basename(e.path)) for e in errors] == [(ImportErrorKind.MALFORMED, "a.gguf")]
    assert "TypeError: an unforeseen bug" in errors[0].message
    with pytest.raises(ModelImportError, match="an unforeseen bug"):
        read_gguf(tmp_path / "a.gguf")


# ------------------------------------------------------- 6: declared bytes versus the file size


def test_tensors_claiming_more_bytes_than_the_file_holds_are_refused_with_the_numbers(tmp_path):
    """Each tensor fits on its own; together (overlapping) they claim 8,192 bytes of a 4,096-byte file.
    Was: accepted, with weight_bytes twice the file."""
    infos = tensor_info("a", (1024,), 0, 0) + tensor_info("b", (1024,), 0, 0)
    path = tmp_path / "overlap.gguf"
    path.write_bytes(raw_header(tensors=infos, n_tensors=2) + b"\0" * 4096)
    with pytest.raises(ModelImportError) as err:
        bounded(lambda: read_gguf(path))
    assert err.value.kind is ImportErrorKind.MALFORMED
    assert "declares 8,192 bytes of tensors, the file holds 4,096" in err.value.message
    safetensors = json.dumps({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                              "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}).encode()
    st_path = tmp_path / "overlap.safetensors"
    st_path.write_bytes(struct.pack("<Q", len(safetensors)) + safetensors + b"\0" * 6)
    with pytest.raises(ModelImportError, match="declares 8 bytes of tensors, the file holds 6"):
        read_safetensors(st_path)


# ------------------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> tuple[bytes, int]:
    """A valid GGUF and the length of its header (the bytes worth mutating)."""
    path = write_gguf(tmp_path_factory.mktemp("fuzz") / "small.gguf",
                      tensors={"token_embd.weight": np.zeros((16, 64), np.float32),
                               "blk.0.attn_norm.weight": np.ones(64, np.float32)})
    reader = gguf.GGUFReader(path)
    header = reader.data_offset
    del reader
    return path.read_bytes(), header


HUGE = st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**64 - 1, 10**8, 10_001])


@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_gguf_headers_end_in_a_result_or_an_import_error_quickly(tmp_path, small_gguf, data):
    blob = bytearray(small_gguf[0])
    header = small_gguf[1]
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        at = data.draw(st.integers(0, header - 1), label="at")
        if data.draw(st.booleans(), label="word"):  # a length, count or number made huge (or zero)
            width = data.draw(st.sampled_from([4, 8]), label="width")
            value = data.draw(HUGE, label="value") % (1 << (8 * width))
            blob[at:at + width] = value.to_bytes(width, "little")
        else:
            blob[at] = data.draw(st.integers(0, 255), label="byte")
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(bytes(blob[:len(small_gguf[0])]))
    try:
        model = bounded(lambda: read_gguf(path), seconds=1.0)
    except ModelImportError as exc:
        assert exc.path == str(path) and exc.message.endswith(".") and len(exc.message) < 1000
    else:
        assert isinstance(model, ScannedModel) and model.parameters and model.parameters > 0
        assert model.weight_bytes <= model.file_bytes
        registrable(model)
