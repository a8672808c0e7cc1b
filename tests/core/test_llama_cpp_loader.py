"""The llama.cpp runtime: a GGUF file really loads as placed, what llama.cpp allocated is booked, and
without the extra installed nothing changes but one clear line."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from app.core.hardware.host import HostBackend
from app.core.hardware_profiler import HardwareProfiler
from app.core.importers import read_gguf
from app.core.llama_cpp_runtime import INSTALL_HINT, LlamaCppLoader, RuntimeRouter, availability, parse_buffer_line
from app.core.manager.errors import LoaderError
from app.core.manager.loaders import ReservationLoader
from app.core.model_registry import ModelRegistry
from app.core.model_resource_manager import ModelResourceManager

MiB = 2**20


def write_llama(path: Path, *, layers: int = 2, embd: int = 320, heads: int = 5, kv_heads: int = 1, ff: int = 864,
                vocab: int = 1000) -> Path:
    """A tiny random-weight Llama (f32) with a dummy vocabulary, as the ``gguf`` package writes one."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(16384)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(embd // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}".encode() for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([1] * vocab)
    rng = np.random.default_rng(0)

    def t(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    hd = embd // heads
    t("token_embd.weight", vocab, embd)
    t("output_norm.weight", embd)
    t("output.weight", vocab, embd)
    for i in range(layers):
        p = f"blk.{i}."
        t(p + "attn_norm.weight", embd)
        t(p + "attn_q.weight", embd, embd)
        t(p + "attn_k.weight", kv_heads * hd, embd)
        t(p + "attn_v.weight", kv_heads * hd, embd)
        t(p + "attn_output.weight", embd, embd)
        t(p + "ffn_norm.weight", embd)
        t(p + "ffn_gate.weight", ff, embd)
        t(p + "ffn_up.weight", ff, embd)
        t(p + "ffn_down.weight", embd, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def gguf_q8(tmp_path_factory) -> Path:
    """The tiny model, quantized to Q8_0 by llama.cpp's own quantizer."""
    llama_cpp = pytest.importorskip("llama_cpp", reason=f"the llama.cpp runtime is not installed: {INSTALL_HINT}")
    folder = tmp_path_factory.mktemp("gguf")
    src = write_llama(folder / "tiny-f32.gguf")
    out = folder / "tiny-q8_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params)) == 0
    return out


@pytest.fixture
def rig(gguf_q8):
    registry = ModelRegistry(user_store=None)
    meta = registry.register_scanned(read_gguf(str(gguf_q8)), persist=False)
    progress: list[float] = []
    loader = LlamaCppLoader(progress=lambda _mid, f: progress.append(f), threads=1)
    manager = ModelResourceManager(profiler=HardwareProfiler(backends=[], host=HostBackend()), registry=registry,
                                   loader=loader)
    yield manager, loader, meta, progress
    for m in manager.loaded_models():
        manager.unload(m.model_id)
    manager.stop()


def test_a_gguf_file_really_loads_and_the_ledger_books_what_llama_cpp_allocated(rig):
    manager, loader, meta, progress = rig
    rss = psutil.Process().memory_info().rss
    loaded = manager.load(meta.id, context=8192)
    grew = psutil.Process().memory_info().rss - rss
    assert loaded.quantization == "Q8_0" and loaded.device == "cpu"  # the file's own level, on this GPU-less box
    handle = manager.handle(meta.id)
    assert handle.llama is not None and handle.llama.n_ctx() == 8192
    measured = dict((c, b) for d, c, b in loaded.measured if d == "cpu")
    # 2 layers × 8192 tokens × 1 KV head × 64 × 2 (K, V) × 2 bytes (f16)
    assert measured["kv_cache"] == 2 * 8192 * 64 * 2 * 2
    assert measured["weights"] > 0 and measured["compute"] > 0
    assert loaded.measured_bytes == {"cpu": sum(measured.values())}
    # The booking is what llama.cpp allocated (output folded into compute), not the estimate.
    (booking,) = manager.reservations()
    assert booking.category("weights") == measured["weights"]
    assert booking.category("kv_cache") == measured["kv_cache"]
    assert booking.category("compute") == measured["compute"] + measured.get("output", 0)
    # The process grew by the KV cache llama.cpp cleared at load; the compute buffer is reserved then and
    # written on the first batch: after one, the process holds both.
    assert grew >= measured["kv_cache"], (grew, measured)
    handle.llama.eval(list(range(3, 3 + 512)))  # a full batch of token ids (the dummy vocabulary has no tokenizer)
    grew = psutil.Process().memory_info().rss - rss
    # Pages the allocator reuses from earlier tests do not show as growth: the figure is of the right
    # size, not exact (half of KV + compute at least, and nothing large beyond what was reported).
    assert 0.5 * (measured["kv_cache"] + measured["compute"]) <= grew <= sum(measured.values()) + 64 * MiB, \
        (grew, measured)
    assert progress and progress[0] == 0.0 and progress[-1] == 1.0
    manager.unload(meta.id)
    assert handle.llama is None and manager.reservations() == ()


def test_a_cancelled_load_books_nothing(rig):
    manager, loader, meta, _ = rig
    assert loader.cancel(meta.id) is False  # no load in progress: nothing is remembered for a later one
    assert manager.load(meta.id).measured
    manager.unload(meta.id)
    loader.progress = lambda model_id, fraction: loader.cancel(model_id)  # cancelled at the first report
    with pytest.raises(LoaderError, match="cancelled"):
        manager.load(meta.id)
    assert manager.reservations() == () and manager.state_of(meta.id).value == "failed"
    loader.progress = None
    assert manager.load(meta.id).measured  # the next load is not cancelled


def test_a_file_is_planned_at_its_own_level(rig):
    manager, _, meta, _ = rig
    from app.core.estimation import UnknownQuantizationError

    assert manager.request(meta.id).level == "Q8_0"
    with pytest.raises(UnknownQuantizationError, match="is a Q8_0 file .* Quantize it to Q4_K_M"):
        manager.request(meta.id, "Q4_K_M")


def test_what_is_not_a_gguf_file_is_one_line(tmp_path, rig):
    manager, loader, meta, _ = rig
    from app.core.model_spec import ModelMetadata, ModelType

    fake = tmp_path / "notes.txt"
    fake.write_text("hello")
    other = ModelMetadata(name="notes", provider="other", model_type=ModelType.LLM, size_gb=0.1,
                          model_id="file:notes", path=str(fake))
    with pytest.raises(LoaderError, match="is not a GGUF file here"):
        loader.load(other, None)  # type: ignore[arg-type]


def test_the_router_sends_gguf_files_to_llama_cpp_and_the_rest_to_the_hosts_loader(rig):
    manager, loader, meta, _ = rig
    manager.loader = RuntimeRouter(loader, ReservationLoader())
    loaded = manager.load(meta.id)
    assert loaded.measured
    catalog = manager.load("sentence-transformers/all-MiniLM-L6-v2", device="cpu", allow_cpu=True)
    assert catalog.measured == () and catalog.measured_bytes is None


def test_without_the_extra_a_load_says_how_to_add_it(monkeypatch, rig):
    manager, loader, meta, _ = rig
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if not installed
    ok, why = availability()
    assert not ok and "modeldeck[llama]" in why
    with pytest.raises(LoaderError, match=r"pip install 'modeldeck\[llama\]'"):
        manager.load(meta.id)


@pytest.mark.parametrize(("line", "parsed"), [
    ("load_tensors:   CPU_Mapped model buffer size =     2.06 MiB", ("cpu", "weights", round(2.06 * MiB))),
    ("load_tensors:        CUDA0 model buffer size =  4403.49 MiB", ("cuda:0", "weights", round(4403.49 * MiB))),
    ("llama_kv_cache:      CUDA1 KV buffer size =   512.00 MiB", ("cuda:1", "kv_cache", 512 * MiB)),
    ("llama_context:  CUDA_Host  output buffer size =     0.49 MiB", ("cpu", "output", round(0.49 * MiB))),
    ("sched_reserve:        ROCm0 compute buffer size =   296.01 MiB", ("cuda:0", "compute", round(296.01 * MiB))),
    ("print_info: file type   = Q4_K - Medium", None),
])
def test_buffer_lines(line, parsed):
    assert parse_buffer_line(line) == parsed


def test_a_real_load_is_kept_and_the_next_plan_uses_what_was_measured(gguf_q8, tmp_path):
    from app.core.calibration import CalibrationStore

    registry = ModelRegistry(user_store=None)
    meta = registry.register_scanned(read_gguf(str(gguf_q8)), persist=False)
    store = CalibrationStore(tmp_path / "calibration.json")

    def manager() -> ModelResourceManager:
        return ModelResourceManager(profiler=HardwareProfiler(backends=[], host=HostBackend()), registry=registry,
                                    loader=LlamaCppLoader(threads=1), calibration=store)

    first = manager()
    before = first.plan(meta.id, context=2048)
    loaded = first.load(meta.id, context=2048)
    first.unload(meta.id)
    first.stop()
    (entry,) = store.entries()
    assert (entry.model_id, entry.level, entry.context, entry.device) == (meta.id, "Q8_0", 2048, "cpu")
    assert entry.measured["kv_cache"] == dict((c, b) for _, c, b in loaded.measured)["kv_cache"]
    # A new process (a new manager over the same store) plans with the measured figures.
    second = manager()
    after = second.plan(meta.id, context=2048)
    second.stop()
    est = after.placement.estimate
    assert est.kv_cache.bytes == entry.measured["kv_cache"] and "measured by llama.cpp" in est.kv_cache.explanation
    assert est.compute.bytes == entry.measured["compute"] + entry.measured.get("output", 0)
    assert before.placement.estimate.compute.bytes != est.compute.bytes  # it was an estimate before


def test_only_the_loading_threads_log_lines_are_counted(gguf_q8):
    import threading

    from app.core import llama_cpp_runtime as runtime

    runtime._llama()  # the process's log tap
    tap = runtime._TAP
    line = "load_tensors:   CPU_Mapped model buffer size =     1.00 MiB\n"
    with tap.capture() as ours:
        other = threading.Thread(target=tap._line, args=(line,))  # a host's own load, meanwhile
        other.start()
        other.join()
        assert ours.by_device == {}
        tap._line(line)
    assert ours.by_device == {"cpu": {"weights": MiB}}


def test_a_build_without_gpu_support_refuses_a_gpu_placement(gguf_q8):
    from app.core.hardware.simulated import SimulatedBackend

    registry = ModelRegistry(user_store=None)
    meta = registry.register_scanned(read_gguf(str(gguf_q8)), persist=False)
    simulated = ModelResourceManager(profiler=HardwareProfiler(backends=[SimulatedBackend.from_spec("rtx3060")]),
                                     registry=registry)
    decision = simulated.plan(meta.id)
    simulated.stop()
    assert decision.placement.device == "cuda:0"
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama.cpp build has GPU support")
    with pytest.raises(LoaderError, match="runs on the CPU only.*cuda:0.*GGML_CUDA=on"):
        LlamaCppLoader().load(meta, decision.placement)


def test_a_context_past_the_models_own_is_capped_as_the_estimate_caps_it(rig):
    manager, _, meta, _ = rig
    loaded = manager.load(meta.id, context=65536)  # the tiny model was trained for 16,384
    assert manager.handle(meta.id).llama.n_ctx() == 16384
    kv = dict((c, b) for _, c, b in loaded.measured)["kv_cache"]
    assert kv == 2 * 16384 * 64 * 2 * 2 == loaded.placement.estimate.kv_cache.bytes


def test_a_split_load_is_kept_whole_and_plans_again_as_a_split(tmp_path):
    """One entry per load, for the whole model: a split's two shares never stand for the model."""
    from app.core.calibration import CalibrationStore
    from app.core.manager.loaders import ReservationLoader

    class Exact(ReservationLoader):
        """A runtime that allocates exactly what was estimated, per device."""

        def load(self, metadata, placement):
            return placement

        def measured(self, placement):
            return {s.device: {"weights": s.weights_bytes, "kv_cache": s.kv_cache_bytes, "compute": s.compute_bytes}
                    for s in placement.shares}

    registry = ModelRegistry(user_store=None)
    store = CalibrationStore(tmp_path / "calibration.json")
    manager = ModelResourceManager(profiler=HardwareProfiler(simulate="2xrtx3060"), registry=registry, loader=Exact(),
                                   calibration=store)
    model = "mistralai/Mistral-Small-24B-Instruct-2501"
    first = manager.plan(model, "Q5_K_M", allow_cpu=False)
    assert first.placement.kind == "split"
    manager.load(model, "Q5_K_M", allow_cpu=False)
    manager.unload(model)
    (entry,) = store.entries()
    assert entry.device == first.placement.device and "+" in entry.device  # the whole placement
    # weights and KV add up across devices; each device's compute buffer is its own, so it is not kept
    assert set(entry.measured) == {"weights", "kv_cache"}
    assert entry.measured["weights"] == sum(s.weights_bytes for s in first.placement.shares)
    again = manager.plan(model, "Q5_K_M", allow_cpu=False)
    manager.stop()
    assert again.placement.kind == "split" and again.placement.own_bytes == first.placement.own_bytes
    assert "measured" in again.placement.estimate.weights.explanation


def test_swapping_to_a_level_the_file_does_not_have_moves_nothing(rig):
    manager, _, meta, _ = rig
    from app.core.estimation import UnknownQuantizationError

    manager.load(meta.id)
    handle = manager.handle(meta.id)
    with pytest.raises(UnknownQuantizationError, match="Q8_0 file"):
        manager.swap(meta.id, meta.id, level="Q4_K_M")
    assert manager.handle(meta.id) is handle and handle.llama is not None  # never unloaded
