"""llama.cpp as ModelDeck's runtime for GGUF files (the optional ``modeldeck[llama]`` extra).

:class:`LlamaCppLoader` is a :class:`~app.core.manager.loaders.ModelLoader`: it loads a registered
GGUF file as the placement says (GPU layers, the device, the split, the context), frees it on
unload, reloads it with no GPU layers to offload and on its device to restore. Loads report
progress and can be cancelled. What llama.cpp allocated — weights per device, KV cache, output and
compute buffers — is read from its log callback while the load runs (never from stdout) and
returned by :meth:`LlamaCppLoader.measured`, which the manager books in place of the estimate.

Without ``llama-cpp-python`` installed nothing here imports it: :func:`availability` says how to add it.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.manager.errors import LoaderError
from app.core.manager.placement import Placement
from app.core.model_spec import ModelMetadata
from app.core.units import MiB

__all__ = ["INSTALL_HINT", "Buffers", "LlamaCppLoader", "LlamaHandle", "RuntimeRouter", "availability",
           "parse_buffer_line"]

_log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'modeldeck[llama]' (builds llama-cpp-python, about 12 minutes on 2 cores)"

#: ``load_tensors:   CPU_Mapped model buffer size =     2.06 MiB``, ``llama_kv_cache:  CUDA0 KV buffer size = …``
_BUFFER = re.compile(r"^\s*[\w.]+:\s+(?P<where>[\w-]+)\s+(?P<what>model|KV|output|compute)\s+buffer size\s*=\s*"
                     r"(?P<mib>[\d.]+)\s*MiB", re.ASCII)
_CATEGORY = {"model": "weights", "KV": "kv_cache", "output": "output", "compute": "compute"}
_GPU = re.compile(r"^(?P<kind>CUDA|ROCm|HIP|Vulkan|SYCL)(?P<index>\d+)$")


def parse_buffer_line(line: str) -> tuple[str, str, int] | None:
    """(device, category, bytes) from one llama.cpp log line, or None. The log states MiB with two
    decimals, so the bytes are good to about 5 KiB."""
    m = _BUFFER.match(line)
    if m is None:
        return None
    where = m["where"]
    gpu = _GPU.match(where)
    device = f"cuda:{gpu['index']}" if gpu else "cpu"  # ModelDeck names every GPU cuda:N (AMD's too)
    return device, _CATEGORY[m["what"]], int(round(float(m["mib"]) * MiB))


@dataclass
class Buffers:
    """What one load allocated: device → category → bytes (categories weights, kv_cache, output, compute)."""

    by_device: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, device: str, category: str, nbytes: int) -> None:
        row = self.by_device.setdefault(device, {})
        row[category] = row.get(category, 0) + nbytes

    def total(self) -> int:
        return sum(sum(row.values()) for row in self.by_device.values())


def availability() -> tuple[bool, str]:
    """(True, version) when llama-cpp-python can be imported; else (False, how to add it)."""
    try:
        import llama_cpp
    except ImportError as err:
        return False, f"the llama.cpp runtime is not installed ({err.name or err}); {INSTALL_HINT}"
    except Exception as err:  # noqa: BLE001 - the library is there but does not load (RuntimeError, OSError)
        return False, f"llama-cpp-python is installed but its library does not load: {err}; reinstall it"
    return True, str(getattr(llama_cpp, "__version__", "?"))


# --- llama.cpp's log, captured per load ------------------------------------------------------------------
class _LogTap:
    """The process-wide llama.cpp log callback: lines go to Python logging (debug) and, while a load
    runs, to that load's :class:`Buffers`."""

    def __init__(self, lib: Any) -> None:
        self._lock = threading.Lock()
        self._active: Buffers | None = None
        self._thread: int | None = None
        self._partial = ""

        @lib.llama_log_callback
        def callback(level: int, text: bytes, user_data: Any) -> None:
            try:
                self._line(text.decode("utf-8", "replace"))
            except Exception:  # noqa: BLE001 - never let an exception cross into C
                pass

        self._callback = callback  # kept: llama.cpp holds only the pointer
        lib.llama_log_set(callback, ctypes.c_void_p(0))

    def _line(self, text: str) -> None:
        with self._lock:
            text = self._partial + text
            lines = text.split("\n")
            self._partial = lines.pop()
            # Only the loading thread's lines: a host loading its own model meanwhile is not ours.
            active = self._active if self._thread == threading.get_ident() else None
        for line in lines:
            _log.debug("llama.cpp: %s", line)
            found = parse_buffer_line(line)
            if found is not None and active is not None:
                active.add(*found)

    @contextmanager
    def capture(self) -> Iterator[Buffers]:
        buffers = Buffers()
        with self._lock:
            self._active, self._thread = buffers, threading.get_ident()
        try:
            yield buffers
        finally:
            with self._lock:
                self._active, self._thread = None, None


_TAP: _LogTap | None = None
_TAP_LOCK = threading.Lock()
#: One llama.cpp load at a time in a process: the log callback and the progress hook are global.
_LOAD_LOCK = threading.Lock()


def _llama() -> Any:
    ok, detail = availability()
    if not ok:
        raise LoaderError(detail)
    import llama_cpp

    global _TAP
    with _TAP_LOCK:
        if _TAP is None:
            _TAP = _LogTap(llama_cpp)
    return llama_cpp


@contextmanager
def _progress_hook(lib: Any, report: Callable[[float], bool]) -> Iterator[None]:
    """llama-cpp-python's ``Llama`` takes no progress callback; its model parameters do. For the
    duration of one load (under :data:`_LOAD_LOCK`), the default parameters it starts from carry ours."""
    loading = threading.get_ident()

    @ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_float, ctypes.c_void_p)
    def progress(fraction: float, user_data: Any) -> bool:
        if threading.get_ident() != loading:  # a host's own load meanwhile: not ours to report or stop
            return True
        try:
            return bool(report(float(fraction)))
        except Exception:  # noqa: BLE001 - never let an exception cross into C
            return True

    import llama_cpp.llama_cpp as bindings  # the module ``Llama`` reads its defaults from

    original = bindings.llama_model_default_params

    def with_progress() -> Any:
        params = original()
        params.progress_callback = ctypes.cast(progress, type(params.progress_callback))
        return params

    bindings.llama_model_default_params = with_progress
    try:
        yield
    finally:
        bindings.llama_model_default_params = original


# --- the loader ------------------------------------------------------------------------------------------
@dataclass
class LlamaHandle:
    """A loaded model: the ``llama_cpp.Llama`` object a host runs, and what its load allocated."""

    model_id: str
    path: str
    placement: Placement
    llama: Any
    buffers: Buffers
    #: The model's trained context: a longer one asked for is capped to it, as the estimate caps it.
    max_context: int | None = None

    def close(self) -> None:
        llama, self.llama = self.llama, None
        if llama is not None:
            llama.close()


_KV_TYPES = {"f16": "GGML_TYPE_F16", "q8_0": "GGML_TYPE_Q8_0", "q4_0": "GGML_TYPE_Q4_0", "f32": "GGML_TYPE_F32"}


class LlamaCppLoader:
    """Loads GGUF files with llama.cpp, as the placement says.

    ``progress(model_id, fraction)`` hears load progress (on the loading thread); :meth:`cancel`
    stops a load in progress (it fails with a :class:`LoaderError` and books nothing).
    """

    def __init__(self, *, batch: int = 512, flash_attention: bool = True, kv_type: str = "f16",
                 threads: int | None = None, progress: Callable[[str, float], None] | None = None) -> None:
        if kv_type not in _KV_TYPES:
            raise ValueError(f"unknown KV cache type {kv_type!r}; use one of {', '.join(_KV_TYPES)}")
        if kv_type != "f16" and not flash_attention:
            raise ValueError("a quantized KV cache needs flash attention in llama.cpp")
        self.batch = batch
        self.flash_attention = flash_attention
        self.kv_type = kv_type
        self.threads = threads
        self.progress = progress
        self._cancelled: set[str] = set()
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    # --- ModelLoader --------------------------------------------------------------------------------
    def load(self, metadata: ModelMetadata, placement: Placement) -> LlamaHandle:
        path = self._path_of(metadata)
        arch = metadata.estimation_architecture
        max_context = arch.max_context if arch is not None else None
        with self._lock:
            self._loading.add(metadata.id)
        try:
            llama, buffers = self._open(metadata.id, path, placement, max_context, cancellable=True)
        finally:
            with self._lock:
                self._loading.discard(metadata.id)
                self._cancelled.discard(metadata.id)
        return LlamaHandle(metadata.id, path, placement, llama, buffers, max_context)

    def unload(self, model_id: str, handle: Any) -> None:
        if isinstance(handle, LlamaHandle):
            handle.close()

    def offload(self, model_id: str, handle: Any) -> None:
        """Reload with every layer in RAM (llama.cpp cannot move a loaded model's tensors)."""
        h = self._handle(model_id, handle)
        self._reopen(h, _on_cpu(h.placement))

    def restore(self, model_id: str, handle: Any, device: str) -> None:
        """Reload with the placement's GPU layers, on ``device``."""
        h = self._handle(model_id, handle)
        placement = h.placement
        if placement.kind == "gpu" and placement.home_device != device:
            from app.core.manager.planner import retarget

            placement = retarget(placement, device, placement.reason)
        self._reopen(h, placement)
        h.placement = placement

    # --- what it measured -----------------------------------------------------------------------------
    def measured(self, handle: Any) -> Mapping[str, Mapping[str, int]] | None:
        """Device → category → bytes llama.cpp allocated for the model now (None when not known)."""
        if not isinstance(handle, LlamaHandle) or not handle.buffers.by_device:
            return None
        return {d: dict(row) for d, row in handle.buffers.by_device.items()}

    def cancel(self, model_id: str) -> bool:
        """Stop loading ``model_id`` (at llama.cpp's next progress report); False when no load of it is
        in progress (nothing is remembered for a later one, and a reload for offload or restore is never
        cancelled)."""
        with self._lock:
            if model_id not in self._loading:
                return False
            self._cancelled.add(model_id)
            return True

    # --- internals -------------------------------------------------------------------------------------
    @staticmethod
    def _path_of(metadata: ModelMetadata) -> str:
        path = metadata.path
        if not path:
            raise LoaderError(f"{metadata.name} has no file: the llama.cpp runtime loads GGUF files registered "
                              "with `modeldeck scan` or Add model")
        if not path.lower().endswith(".gguf") or not Path(path).is_file():
            raise LoaderError(f"{path} is not a GGUF file here; the llama.cpp runtime loads .gguf files only")
        return path

    @staticmethod
    def _handle(model_id: str, handle: Any) -> LlamaHandle:
        if not isinstance(handle, LlamaHandle):
            raise LoaderError(f"{model_id} was not loaded by the llama.cpp runtime")
        return handle

    def _reopen(self, h: LlamaHandle, placement: Placement) -> None:
        """Close and load again as ``placement`` says; if that fails, load as it was, so a failed offload or
        restore leaves the model where the manager says it stays."""
        old = h.placement
        h.close()
        try:
            h.llama, h.buffers = self._open(h.model_id, h.path, placement, h.max_context)
        except LoaderError as err:
            try:
                h.llama, h.buffers = self._open(h.model_id, h.path, old, h.max_context)
            except LoaderError as again:
                raise LoaderError(f"{err}; and it could not be loaded again as it was ({again}): unload it") \
                    from again
            raise

    def _kwargs(self, lib: Any, placement: Placement, max_context: int | None) -> dict[str, Any]:
        gpus = [s for s in placement.shares if s.device != "cpu"]
        if gpus and not lib.llama_supports_gpu_offload():
            raise LoaderError(
                f"this llama.cpp build runs on the CPU only, and the placement puts layers on "
                f"{', '.join(s.device for s in gpus)}; reinstall it with GPU support "
                "(CMAKE_ARGS='-DGGML_CUDA=on' pip install --force-reinstall --no-cache-dir llama-cpp-python), "
                "or load the model on the CPU")
        context = 4096 if placement.context is None else placement.context
        if max_context:
            context = min(context, max_context)  # as the estimate caps it
        kwargs: dict[str, Any] = {
            "n_ctx": max(1, context), "n_batch": self.batch, "flash_attn": self.flash_attention,
            "type_k": getattr(lib, _KV_TYPES[self.kv_type]), "type_v": getattr(lib, _KV_TYPES[self.kv_type]),
            "verbose": False,
            # Sliding-window layers cache their window only, as llama-server does (and as the estimate assumes).
            "swa_full": False,
        }
        if self.threads:
            kwargs["n_threads"] = self.threads
        if not gpus:
            kwargs["n_gpu_layers"] = 0
        elif placement.kind == "split":
            kwargs.update(n_gpu_layers=-1, split_mode=lib.LLAMA_SPLIT_MODE_LAYER,
                          tensor_split=[float(s.layers or 1) for s in gpus])
        else:
            index = int(gpus[0].device.split(":", 1)[1])
            layers = placement.gpu_layers if placement.kind == "partial" and placement.gpu_layers is not None else -1
            kwargs.update(n_gpu_layers=layers, main_gpu=index, split_mode=lib.LLAMA_SPLIT_MODE_NONE)
        return kwargs

    def _open(self, model_id: str, path: str, placement: Placement, max_context: int | None, *,
              cancellable: bool = False) -> tuple[Any, Buffers]:
        lib = _llama()
        kwargs = self._kwargs(lib, placement, max_context)

        def report(fraction: float) -> bool:
            with self._lock:
                if cancellable and model_id in self._cancelled:
                    return False
            if self.progress is not None:
                self.progress(model_id, fraction)
            return True

        assert _TAP is not None
        with _LOAD_LOCK, _progress_hook(lib, report), _TAP.capture() as buffers:
            try:
                llama = lib.Llama(model_path=path, **kwargs)
            except (ValueError, RuntimeError, OSError) as err:
                with self._lock:
                    cancelled = cancellable and model_id in self._cancelled
                if cancelled:
                    raise LoaderError(f"{model_id}: loading was cancelled") from err
                raise LoaderError(f"llama.cpp could not load {path}: {err}") from err
        return llama, buffers


def _on_cpu(placement: Placement) -> Placement:
    """The same model with every layer in RAM (what an offload reloads)."""
    from dataclasses import replace

    from app.core.manager.placement import Share

    shares = placement.shares
    share = Share("cpu", sum(s.weights_bytes for s in shares), sum(s.kv_cache_bytes for s in shares),
                  sum(s.compute_bytes for s in shares), 0)
    return replace(placement, kind="cpu", shares=(share,), gpu_layers=0, reason="offloaded to RAM")


class RuntimeRouter:
    """GGUF files to llama.cpp, everything else to ``other`` (a host's own loader, or booking only).

    What the dashboard uses when the extra is installed: scanned and registered GGUF files really
    load, and catalog models keep being booked for the host to load its own way.
    """

    def __init__(self, llama: LlamaCppLoader, other: Any) -> None:
        self.llama = llama
        self.other = other

    @staticmethod
    def _is_gguf(metadata: ModelMetadata) -> bool:
        return bool(metadata.path and metadata.path.lower().endswith(".gguf"))

    def load(self, metadata: ModelMetadata, placement: Placement) -> Any:
        return (self.llama if self._is_gguf(metadata) else self.other).load(metadata, placement)

    def _for(self, handle: Any) -> Any:
        return self.llama if isinstance(handle, LlamaHandle) else self.other

    def unload(self, model_id: str, handle: Any) -> Any:
        return self._for(handle).unload(model_id, handle)

    def offload(self, model_id: str, handle: Any) -> Any:
        return self._for(handle).offload(model_id, handle)

    def restore(self, model_id: str, handle: Any, device: str) -> Any:
        return self._for(handle).restore(model_id, handle, device)

    def measured(self, handle: Any) -> Mapping[str, Mapping[str, int]] | None:
        measure = getattr(self._for(handle), "measured", None)
        return measure(handle) if measure is not None else None

    def cancel(self, model_id: str) -> bool:
        """Stop a llama.cpp load in progress (the other loader's loads run to the end)."""
        return self.llama.cancel(model_id)
