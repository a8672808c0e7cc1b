"""llama.cpp as an oracle: quantize with its own quantizer, load, and read back what it allocated.

llama.cpp reports its buffers only in its log, through the log callback (never stdout):

    load_tensors:   CPU_Mapped model buffer size =     2.06 MiB
    llama_context:        CPU  output buffer size =     0.00 MiB
    llama_kv_cache:        CPU KV buffer size =     0.25 MiB
    sched_reserve:        CPU compute buffer size =     9.38 MiB
    ~llama_context:        CPU compute buffer size is   9.3848 MiB, matches expectation of   9.3848 MiB

``parse_buffer_line`` turns such a line into a ``Buffer`` (kind, device, bytes, and the rounding of
the printed figure); ``parse_kv_cache_line`` reads the exact cell and layer counts of each KV cache
(``llama_kv_cache: size = 0.25 MiB (512 cells, 2 layers, 1/1 seqs), K (f16): …``), which with the
element types give the cache's bytes exactly. Exact APIs are used where llama.cpp has them:
``llama_model_size`` (all tensor bytes), ``llama_model_n_params`` and ``llama_n_ctx`` (cells after padding).

The parsers are plain functions on strings and do not need llama_cpp; ``LlamaCpp`` does.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20

#: Buffer kinds as llama.cpp's log names them -> ours.
_KINDS = {"model": "model", "KV": "kv", "output": "output", "compute": "compute"}

_BUFFER = re.compile(
    r"^\s*(?P<func>~?\w+):\s+(?P<device>\S+)\s+(?P<kind>model|KV|output|compute) buffer size"
    r"\s+(?:=|is)\s+(?P<mib>-?\d+(?:\.(?P<frac>\d+))?) MiB"
)
_KV_CACHE = re.compile(
    r"^\s*llama_kv_cache:\s+size\s+=\s+(?P<mib>[\d.]+) MiB \(\s*(?P<cells>\d+) cells,\s*(?P<layers>\d+) layers,"
    r"\s*(?P<seqs>\d+)/(?P<seq_max>\d+) seqs\), K \((?P<type_k>\w+)\):\s+[\d.]+ MiB, V \((?P<type_v>\w+)\)"
)

#: ggml KV element types by llama.cpp's name -> (ggml type id, elements per block, bytes per block).
KV_GGML = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20), "q5_0": (6, 32, 22),
           "q5_1": (7, 32, 24), "q8_0": (8, 32, 34), "bf16": (30, 1, 2)}

#: Presets the oracle quantizes to: every k-quant and legacy preset llama.cpp makes without an
#: importance matrix, plus F16. (Q2_K_S and IQ1_*/IQ2_*/IQ3_XXS/IQ3_XS need one and are skipped.)
PRESETS = ("F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
           "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
#: Presets left out, and why.
SKIPPED_PRESETS = {
    "Q2_K_S": "needs an importance matrix (llama-quantize refuses it without one)",
    "IQ1_S": "needs an importance matrix", "IQ1_M": "needs an importance matrix",
    "IQ2_XXS": "needs an importance matrix", "IQ2_XS": "needs an importance matrix",
    "IQ2_S": "needs an importance matrix", "IQ2_M": "needs an importance matrix",
    "IQ3_XXS": "needs an importance matrix", "IQ3_XS": "needs an importance matrix (its attn_q/attn_k are IQ3_XXS)",
}


@dataclass(frozen=True, slots=True)
class Buffer:
    """One buffer llama.cpp reported: kind (model, kv, output, compute), device (CPU, CPU_Mapped,
    CUDA0 …), bytes as printed, and ``resolution``: half a unit in the printed figure's last place,
    so the true size lies within bytes ± resolution."""

    kind: str
    device: str
    bytes: int
    resolution: int
    final: bool = False  # the figure printed when the context is freed (4 decimals)

    def covers(self, exact: int, slack: int = 0) -> bool:
        """Whether an exact byte count agrees with this printed figure."""
        return abs(exact - self.bytes) <= self.resolution + slack


@dataclass(frozen=True, slots=True)
class KVCacheInfo:
    """One KV cache as llama.cpp describes it (an iSWA model has two)."""

    cells: int
    layers: int
    seqs: int
    type_k: str
    type_v: str


def parse_buffer_line(line: str) -> Buffer | None:
    """A log line -> Buffer, or None for any other line."""
    m = _BUFFER.match(line)
    if m is None:
        return None
    digits = len(m["frac"] or "")
    mib = float(m["mib"])
    return Buffer(_KINDS[m["kind"]], m["device"], round(mib * MiB), int(0.5 * 10**-digits * MiB) + 1,
                  final=m["func"].startswith("~"))


def parse_kv_cache_line(line: str) -> KVCacheInfo | None:
    m = _KV_CACHE.match(line)
    if m is None:
        return None
    return KVCacheInfo(int(m["cells"]), int(m["layers"]), int(m["seqs"]), m["type_k"], m["type_v"])


def kv_row_bytes(kv_type: str, n: int) -> int:
    """ggml_row_size(type, n)."""
    _, block, size = KV_GGML[kv_type]
    return n // block * size


@dataclass
class Log:
    """The lines one capture saw, and what they report."""

    lines: list[str] = field(default_factory=list)

    @property
    def buffers(self) -> list[Buffer]:
        return [b for b in map(parse_buffer_line, self.lines) if b is not None]

    @property
    def kv_caches(self) -> list[KVCacheInfo]:
        return [c for c in map(parse_kv_cache_line, self.lines) if c is not None]

    def total(self, kind: str, *, final: bool = False) -> Buffer | None:
        """All buffers of one kind summed over devices (None when none was reported)."""
        found = [b for b in self.buffers if b.kind == kind and b.final == final]
        if not found:
            return None
        return Buffer(kind, "+".join(b.device for b in found), sum(b.bytes for b in found),
                      sum(b.resolution for b in found), final)

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class ContextMeasure:
    """What llama.cpp allocated for one context."""

    n_ctx: int
    n_ubatch: int
    swa_full: bool
    flash_attention: bool
    type_k: str
    type_v: str
    kv: Buffer | None
    output: Buffer | None
    compute: Buffer | None
    compute_final: Buffer | None
    kv_caches: list[KVCacheInfo]
    log: Log

    @property
    def compute_best(self) -> Buffer | None:
        """The compute buffer at the finest resolution llama.cpp printed it."""
        return self.compute_final or self.compute


@dataclass
class ModelMeasure:
    size: int  # llama_model_size: every tensor's bytes
    n_params: int
    buffers: list[Buffer]
    log: Log


class LlamaCpp:
    """llama-cpp-python's low-level API, with the log captured per call."""

    def __init__(self) -> None:
        import llama_cpp

        self.lib: Any = llama_cpp
        self._lock = threading.Lock()
        self._active: Log | None = None
        self._partial = ""

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: Any) -> None:
            try:
                self._feed(text.decode("utf-8", "replace"))
            except Exception:  # noqa: BLE001 - never let an exception cross into C
                pass

        self._callback = callback  # llama.cpp keeps only the pointer
        llama_cpp.llama_backend_init()

    @property
    def version(self) -> str:
        return str(getattr(self.lib, "__version__", "?"))

    def _feed(self, text: str) -> None:
        with self._lock:
            if self._active is None:
                return
            text = self._partial + text
            lines = text.split("\n")
            self._partial = lines.pop()
            self._active.lines.extend(lines)

    @contextmanager
    def capture(self) -> Iterator[Log]:
        """Route llama.cpp's log into a Log for the duration, then restore whatever callback was set."""
        lib = self.lib
        previous = lib.llama_log_callback()
        previous_data = ctypes.c_void_p()
        lib.llama_log_get(ctypes.byref(previous), ctypes.byref(previous_data))
        log = Log()
        with self._lock:
            self._active, self._partial = log, ""
        lib.llama_log_set(self._callback, ctypes.c_void_p(0))
        try:
            yield log
        finally:
            lib.llama_log_set(previous, previous_data)
            with self._lock:
                if self._partial:
                    log.lines.append(self._partial)
                self._active, self._partial = None, ""

    def quantize(self, src: Path, dst: Path, preset: str, *, threads: int = 2) -> Log:
        lib = self.lib
        params = lib.llama_model_quantize_default_params()
        params.ftype = getattr(lib, "LLAMA_FTYPE_MOSTLY_" + preset)
        params.nthread = threads
        with self.capture() as log:
            rc = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize({preset}) failed ({rc}):\n{log.text()[-2000:]}")
        return log

    @contextmanager
    def model(self, path: Path, *, no_alloc: bool = False) -> Iterator[tuple[Any, ModelMeasure]]:
        """Load a model on the CPU (mmap, as llama.cpp does by default); yields (handle, measure).

        ``no_alloc``: read the header only and allocate nothing (llama.cpp's dry run, as ``--fit`` does):
        contexts then report their compute and output buffers without allocating them."""
        lib = self.lib
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        if no_alloc:
            params.no_alloc = True
            params.load_mode = lib.LLAMA_LOAD_MODE_NONE  # no_alloc refuses mmap
        with self.capture() as log:
            handle = lib.llama_model_load_from_file(str(path).encode(), params)
        if not handle:
            raise RuntimeError(f"llama.cpp could not load {path}:\n{log.text()[-2000:]}")
        try:
            yield handle, ModelMeasure(lib.llama_model_size(handle), lib.llama_model_n_params(handle),
                                       log.buffers, log)
        finally:
            lib.llama_model_free(handle)

    def context(self, model: Any, n_ctx: int, *, n_batch: int = 512, n_ubatch: int = 512,
                flash_attention: bool = True, type_k: str = "f16", type_v: str = "f16",
                swa_full: bool = False, threads: int = 2) -> ContextMeasure:
        """Create a context (which allocates the KV cache, output and compute buffers), read what it
        allocated, and free it.

        ``swa_full``: llama.cpp's library default (llama_context_default_params) is True, a full-size
        cache for sliding-window layers too; llama-server and llama-cli default to False (``--swa-full``
        off), caching only the window plus a micro-batch. Both are measured; False is the default here.
        """
        lib = self.lib
        cp = lib.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, n_batch, n_ubatch, 1
        cp.flash_attn_type = 1 if flash_attention else 0
        cp.type_k, cp.type_v = KV_GGML[type_k][0], KV_GGML[type_v][0]
        cp.n_threads = cp.n_threads_batch = threads
        cp.offload_kqv = False
        cp.swa_full = swa_full
        with self.capture() as log:
            ctx = lib.llama_init_from_model(model, cp)
        if not ctx:
            raise RuntimeError(f"llama.cpp refused a context (n_ctx={n_ctx}, flash attention "
                               f"{flash_attention}, K {type_k}, V {type_v}):\n{log.text()[-1500:]}")
        try:
            cells = lib.llama_n_ctx(ctx)
        finally:
            with self.capture() as final_log:
                lib.llama_free(ctx)
        return ContextMeasure(
            n_ctx=cells, n_ubatch=n_ubatch, swa_full=swa_full, flash_attention=flash_attention,
            type_k=type_k, type_v=type_v,
            kv=log.total("kv"), output=log.total("output"), compute=log.total("compute"),
            compute_final=final_log.total("compute", final=True), kv_caches=log.kv_caches, log=log,
        )


def gguf_tensor_bytes(path: Path) -> tuple[int, dict[str, int]]:
    """(all tensor bytes, bytes per ggml type) of a GGUF file, read exactly with gguf.GGUFReader."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    by_type: dict[str, int] = {}
    for t in reader.tensors:
        name = gguf.GGMLQuantizationType(t.tensor_type).name
        by_type[name] = by_type.get(name, 0) + int(t.n_bytes)
    return sum(by_type.values()), by_type


def gguf_tensor_types(path: Path) -> dict[str, str]:
    """Every tensor's ggml type by name."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: gguf.GGMLQuantizationType(t.tensor_type).name for t in reader.tensors}
