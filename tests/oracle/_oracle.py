"""The oracle session: tiny models written once, quantized by llama.cpp on demand, measurements cached.

Shared by the tests (one session-scoped instance, see conftest.py) and by ``python -m tests.oracle.report``.
Besides measuring, it states llama.cpp's own sizing rules, independently of ModelDeck's estimator, so a
test can check both the estimator and the rules against what llama.cpp reports:

- the context is padded to 256 cells (with or without flash attention);
- a micro-batch never exceeds the context: n_ubatch <= n_batch <= n_ctx;
- an iSWA model (Gemma 2: every 2nd layer global; Gemma 3: every 6th) keeps two caches: the global layers
  cache the context, the sliding-window layers ``GGML_PAD(min(n_ctx, n_swa + n_ubatch), 256)`` cells, or the
  context too with ``swa_full`` (llama.cpp's library default; llama-server's is off);
- a cache row is ``ggml_row_size(type, n_kv_heads * head_dim)`` bytes for K and again for V.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.oracle._llama import ContextMeasure, LlamaCpp, ModelMeasure, gguf_tensor_bytes, kv_row_bytes
from tests.oracle._models import MODELS, REAL_MODELS, TinyModel

#: The preset whose files the KV, compute and output checks load (those buffers do not depend on it).
KV_PRESET = "Q4_K_M"
CONTEXTS = (256, 512, 1000, 2048)
#: (K/V type, flash attention): f16 with and without; q8_0 and q4_0 need flash attention in llama.cpp.
KV_MODES = (("f16", False), ("f16", True), ("q8_0", True), ("q4_0", True))
#: llama.cpp's sliding-window pattern for the architectures it runs with an iSWA cache
#: (``hparams.set_swa_pattern`` in src/llama-model.cpp). Others ignore a window in the file (Phi-3, Llama, Qwen).
LLAMA_CPP_SWA_PATTERN = {"gemma2": 2, "gemma3": 6}


def pad(n: int, to: int = 256) -> int:
    return -(-n // to) * to


def expected_caches(m: TinyModel, n_ctx: int, n_ubatch: int = 512, n_batch: int | None = None,
                    swa_full: bool = False) -> list[tuple[int, int]]:
    """[(cells, layers)] of each KV cache llama.cpp makes, by its rules (module docstring)."""
    cells = pad(n_ctx)
    ubatch = min(n_ubatch, n_batch or n_ubatch, cells)
    pattern = LLAMA_CPP_SWA_PATTERN.get(m.arch)
    if not (pattern and m.sliding_window):
        return [(cells, m.layers)]
    n_swa_layers = sum(1 for il in range(m.layers) if il % pattern < pattern - 1)
    swa_cells = cells if swa_full else pad(min(cells, m.sliding_window + ubatch))
    return [(cells, m.layers - n_swa_layers), (swa_cells, n_swa_layers)]


def cache_bytes(m: TinyModel, caches: list[tuple[int, int]], type_k: str, type_v: str) -> int:
    """Exact bytes of the K and V tensors of these caches."""
    width = m.kv_heads * m.head_dim
    return sum(cells * layers * (kv_row_bytes(type_k, width) + kv_row_bytes(type_v, width)) for cells, layers in caches)


def output_bytes(m: TinyModel, n_seq_max: int = 1) -> int:
    """llama.cpp reserves f32 logits for one output per sequence when a context is made."""
    return 4 * m.vocab * n_seq_max


@dataclass(frozen=True)
class WeightsMeasure:
    file_bytes: int  # all tensors, read with gguf.GGUFReader
    by_type: dict[str, int]
    model: ModelMeasure  # llama_model_size, llama_model_n_params, the model buffers from the log


class Oracle:
    """Lazily writes, quantizes, loads and measures; every result is cached for the session."""

    def __init__(self, root: Path, llama: LlamaCpp | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.llama = llama or LlamaCpp()
        self._paths: dict[tuple[str, str], Path] = {}
        self._weights: dict[tuple[str, str], WeightsMeasure] = {}
        self._contexts: dict[tuple[Any, ...], ContextMeasure] = {}

    def source(self, name: str) -> Path:
        key = (name, "source")
        if key not in self._paths:
            self._paths[key] = MODELS[name].write(self.root / f"{name}-F16-source.gguf")
        return self._paths[key]

    def quantized(self, name: str, preset: str) -> Path:
        """The model quantized by llama.cpp's own quantizer (llama_model_quantize) to ``preset``."""
        key = (name, preset)
        if key not in self._paths:
            path = self.root / f"{name}-{preset}.gguf"
            self.llama.quantize(self.source(name), path, preset)
            self._paths[key] = path
        return self._paths[key]

    def weights(self, name: str, preset: str) -> WeightsMeasure:
        key = (name, preset)
        if key not in self._weights:
            path = self.quantized(name, preset)
            total, by_type = gguf_tensor_bytes(path)
            with self.llama.model(path) as (_, measure):
                pass
            self._weights[key] = WeightsMeasure(total, by_type, measure)
        return self._weights[key]

    def contexts(self, name: str, settings: list[dict[str, Any]], preset: str = KV_PRESET) -> list[ContextMeasure]:
        """One context per settings dict (n_ctx, n_ubatch, flash_attention, type_k, type_v, swa_full),
        the model loaded once for all of them."""
        keys = [(name, preset, tuple(sorted(s.items()))) for s in settings]
        missing = [(k, s) for k, s in zip(keys, settings, strict=True) if k not in self._contexts]
        if missing:
            with self.llama.model(self.quantized(name, preset)) as (handle, _):
                for key, s in missing:
                    s = dict(s)
                    n_ctx = s.pop("n_ctx")
                    ubatch = s.pop("n_ubatch", 512)
                    self._contexts[key] = self.llama.context(handle, n_ctx, n_batch=ubatch, n_ubatch=ubatch, **s)
        return [self._contexts[k] for k in keys]

    def context(self, name: str, n_ctx: int, preset: str = KV_PRESET, **settings: Any) -> ContextMeasure:
        return self.contexts(name, [{"n_ctx": n_ctx, **settings}], preset)[0]

    def real_contexts(self, name: str, settings: list[dict[str, Any]]) -> list[ContextMeasure]:
        """Contexts of a published shape (REAL_MODELS), loaded header-only with no_alloc: compute and output
        buffers as llama.cpp would allocate them, nothing allocated."""
        keys = [("real", name, tuple(sorted(s.items()))) for s in settings]
        missing = [(k, s) for k, s in zip(keys, settings, strict=True) if k not in self._contexts]
        if missing:
            path = REAL_MODELS[name].write_shapes_only(self.root / f"real-{name}.gguf")
            try:
                with self.llama.model(path, no_alloc=True) as (handle, _):
                    for key, s in missing:
                        s = dict(s)
                        n_ctx = s.pop("n_ctx")
                        ubatch = s.pop("n_ubatch", 512)
                        self._contexts[key] = self.llama.context(handle, n_ctx, n_batch=ubatch, n_ubatch=ubatch,
                                                                 **s)
            finally:
                path.unlink(missing_ok=True)
        return [self._contexts[k] for k in keys]
