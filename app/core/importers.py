"""Importers: what a model file holds, read from its header alone.

A GGUF or safetensors header states every tensor's type and shape, so the weight bytes and the
parameter count come out exact without loading a single weight. Headers are untrusted input: every
length is checked against a limit and the file size before anything is read or allocated, and every
failure becomes a `ModelImportError` that says what was wrong and what to do. Pickle formats
(.bin/.pt/.pth/.ckpt) can run code when loaded, so they are registered by file size and never opened.

GGUF headers are walked by a small bounded reader here rather than by `gguf.GGUFReader`: the reader
builds numpy views for every token string (~70 ms for a 3,000-token vocabulary, seconds for a real
150k one), which misses the 5 ms-per-header target. The `gguf` package still supplies the type
tables, and `read_gguf(path, deep_check=True)` re-reads the file with `GGUFReader` and insists both
agree.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import lru_cache
from itertools import pairwise
from typing import Any, NamedTuple, TypeAlias

__all__ = [
    "ArchitectureFile",
    "ImportErrorKind",
    "ModelImportError",
    "ScannedModel",
    "read_architecture",
    "read_gguf",
    "read_safetensors",
    "scan_hf_cache",
    "scan_path",
]

# Limits on untrusted lengths. Real GGUF files hold at most a few thousand tensors and a few hundred
# keys; the largest safetensors headers (DeepSeek-V3 shards) are a few MiB. Each limit keeps a
# hostile header's cost bounded (about a second at worst on a slow machine) while staying far above
# every real file.
MAX_SAFETENSORS_HEADER_BYTES = 100 * 1024 * 1024
# 131,072: ~100x the largest real GGUFs (Llama 3.1 405B and DeepSeek-V3: ~1,100 tensors); each one
# is parsed in Python (~10 us), so the limit bounds the walk to about a second.
MAX_GGUF_TENSORS = 1 << 17
MAX_GGUF_KV = 100_000
# Strings and nested arrays in one header are stepped over one by one: 4,194,304 of them in all, 16x
# the largest vocabulary (Gemma 3's 262,144 tokens) and 4x the largest tokens + merges lists.
MAX_GGUF_WALKED_ITEMS = 1 << 22
# Bytes a GGUF header may make us read: 256 MiB, ~10x the largest real header (a 256k-token
# vocabulary with its merges is ~20 MiB). Longer strings and long scalar arrays are skipped, not read.
MAX_GGUF_HEADER_READ = 256 * 1024 * 1024
MAX_GGUF_DIMS = 4  # GGML_MAX_DIMS: ggml itself rejects more
MAX_GGUF_KEY_BYTES = 65_535  # the GGUF spec's limit on key length
MAX_GGUF_NAME_BYTES = 1024  # ggml's own limit is 64 (GGML_MAX_NAME)
MAX_JSON_SIDE_FILE_BYTES = 64 * 1024 * 1024  # config.json, *.index.json
_KEEP_STRING_BYTES = 1024 * 1024  # longer GGUF string values are skipped, not kept
_KEEP_TOTAL_BYTES = 64 * 1024 * 1024
_KEEP_ARRAY_ITEMS = 4096  # scalar arrays up to this length are kept (per-layer head counts)
_FIRST_CHUNK = 64 * 1024
_MAX_CHUNK = 16 * 1024 * 1024
_INT64_MAX = 2**63 - 1

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: The first note of every pickle registered: its contents were never read, only its size.
UNVERIFIED_PICKLE = "unverified (pickle: not read)"
#: What torch.save writes first: a zip archive whose first entry is ``<name>/data.pkl`` (PyTorch 1.6+),
#: or the legacy format's magic number pickled at protocol 2.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# Pickles that trainers leave next to weights; they are not the model.
_NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt"})
_GENERIC_STEMS = frozenset(
    {"model", "pytorch_model", "diffusion_pytorch_model", "consolidated", "adapter_model", "weights"}
)
_SKIP_DIRS = frozenset({".git", ".locks", "__pycache__", ".ipynb_checkpoints"})

ProgressCallback = Callable[[int, int, str], None]
#: One architecture fact: a count, a family or MLP kind, a flag, or parameters per pipeline part (``components``).
ArchValue: TypeAlias = int | str | bool | dict[str, int] | None


class ImportErrorKind(str, Enum):
    """Why a file could not be imported; the UI picks its advice by kind."""

    TRUNCATED = "truncated"
    OVERSIZED_HEADER = "oversized_header"
    MALFORMED = "malformed"
    UNSUPPORTED = "unsupported"
    NOT_FOUND = "not_found"
    PERMISSION = "permission"
    #: Not a model at all (a pickle-named file outside a model folder): skipped, never registered.
    NOT_A_MODEL = "not_a_model"


_ADVICE = {
    ImportErrorKind.TRUNCATED: "The file is incomplete, probably an interrupted download or copy: "
    "download or copy it again.",
    ImportErrorKind.OVERSIZED_HEADER: "ModelDeck refuses headers this large so that a corrupt file cannot "
    "exhaust memory; the file is corrupt or not a model file: download it again.",
    ImportErrorKind.MALFORMED: "The file is corrupt or not in the format its name says: download it again, "
    "or check where it came from.",
    ImportErrorKind.UNSUPPORTED: "Update ModelDeck and the gguf package, or convert the model to GGUF or "
    "safetensors.",
    ImportErrorKind.NOT_FOUND: "Check the path, or finish downloading every part of the model.",
    ImportErrorKind.PERMISSION: "Give your user read access (for example `chmod a+r`), or run ModelDeck as "
    "a user who can read it.",
    ImportErrorKind.NOT_A_MODEL: "If it is a model, put its config.json beside it, or scan the file itself.",
}


class ModelImportError(Exception):
    """A file that could not be imported: which file, what kind of problem, and what to do about it."""

    def __init__(self, path: str | os.PathLike[str], kind: ImportErrorKind | str, message: str) -> None:
        self.path = os.fspath(path)
        self.kind = ImportErrorKind(kind)
        self.message = message
        super().__init__(f"{self.path}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.kind, self.message))


def _fail(path: str, kind: ImportErrorKind, what: str, advice: str | None = None) -> ModelImportError:
    return ModelImportError(path, kind, f"{what}. {advice or _ADVICE[kind]}")


def _unexpected(path: str, exc: Exception) -> ModelImportError:
    """The last line of defence: an error nothing above foresaw still becomes one clear per-file error."""
    if isinstance(exc, RecursionError):
        what = "is nested too deeply to read"
    elif isinstance(exc, MemoryError):
        what = "needs more memory to read than is free"
    else:
        what = f"could not be read ({type(exc).__name__}: {str(exc)[:200]})"
    return _fail(path, ImportErrorKind.MALFORMED, what,
                 "The file is corrupt or unusual; if it loads elsewhere, report it to the ModelDeck developers.")


def _os_error(path: str, exc: OSError) -> ModelImportError:
    where = os.fspath(exc.filename) if exc.filename else path
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ELOOP:
        return _fail(where, ImportErrorKind.NOT_FOUND, f"is a symbolic link that never reaches a file ({reason})",
                     "Fix or remove the link.")
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return _fail(where, ImportErrorKind.NOT_FOUND, f"not found ({reason})")
    if isinstance(exc, PermissionError):
        return _fail(where, ImportErrorKind.PERMISSION, f"not readable by this user ({reason})")
    if isinstance(exc, IsADirectoryError):
        return _fail(where, ImportErrorKind.UNSUPPORTED, "is a folder, not a model file",
                     "Pass the file, or scan the folder with scan_path.")
    return _fail(where, ImportErrorKind.MALFORMED, f"could not be read ({reason})",
                 "Check the disk and the file system, then try again.")


@dataclass(frozen=True, slots=True)
class ScannedModel:
    """What one model on disk holds, from headers only: the input to estimation and the registry."""

    path: str
    name: str
    format: str
    files: tuple[str, ...]
    file_bytes: int
    weight_bytes: int
    exact: bool
    parameters: int | None
    bytes_by_type: tuple[tuple[str, int], ...]
    file_type: str | None
    architecture: dict[str, ArchValue]
    huggingface_id: str | None = None
    notes: tuple[str, ...] = ()


ARCHITECTURE_KEYS = (
    "family", "layers", "encoder_layers", "hidden_size", "intermediate_size", "heads", "kv_heads", "head_dim",
    "vocab_size", "max_context", "sliding_window", "sliding_window_pattern", "experts", "active_experts",
    "expert_intermediate_size", "shared_experts", "tie_word_embeddings", "attention_bias", "mlp_kind", "kv_lora_rank",
    "qk_rope_head_dim", "components",
)


# Physical ranges of architecture numbers, far above every published model (largest known in
# brackets) so that only nonsense is refused. The same numbers as app.core.estimation's
# ARCHITECTURE_LIMITS (importers may not import estimation; a test keeps the two equal).
ARCHITECTURE_LIMITS: dict[str, int] = {
    "layers": 10_000,  # [126: Llama 3.1 405B]
    "hidden_size": 1 << 20,  # [18,432: Nemotron-4 340B]
    "intermediate_size": 1 << 22,  # [73,728: Nemotron-4 340B]
    "heads": 100_000,  # [128: DeepSeek-V3]
    "kv_heads": 100_000,
    "head_dim": 1 << 16,  # [576: DeepSeek MLA]
    "vocab_size": 10_000_000,  # [262,144: Gemma 3]
    "max_context": 1 << 30,  # [10,485,760: Llama 4 Scout]
    "sliding_window": 1 << 30,
    "experts": 1 << 20,  # [384: Kimi K2]
    "active_experts": 1 << 20,
    "expert_intermediate_size": 1 << 22,
    "sliding_window_pattern": 10_000,  # at most one per layer
    "kv_lora_rank": 1 << 16,  # [512: DeepSeek-V3]
    "qk_rope_head_dim": 1 << 16,  # [64: DeepSeek-V3]
}
#: Ranges the estimator has no field for, checked the same way.
_OTHER_LIMITS: dict[str, int] = {"encoder_layers": 10_000, "shared_experts": 1 << 20}
# Zero means "not used" for these: llama.cpp writes head_count 0, head_count_kv 0 and
# feed_forward_length 0 for attention-free models (Mamba, RWKV); dense configs say num_experts 0.
# A zero anywhere else (layers, hidden size, vocabulary, context) is nonsense and refused.
_ZERO_MEANS_UNUSED = frozenset({"intermediate_size", "heads", "kv_heads", "head_dim", "sliding_window", "experts",
                                "active_experts", "expert_intermediate_size", "shared_experts",
                                "sliding_window_pattern", "kv_lora_rank", "qk_rope_head_dim", "encoder_layers"})


class _BadArchitecture(Exception):
    """An architecture number outside ARCHITECTURE_LIMITS, or numbers that contradict each other (more KV heads
    than heads); the message names the keys and values where they came from."""


#: How a note says a config.json beside the weights was not used, and why.
_CONFIG_UNUSED = "config.json not used: "
#: What to do about a config.json whose numbers are impossible.
_CONFIG_ADVICE = ("Check config.json: download the model's own config.json again, or correct that key "
                  "(the numbers are in the model card).")


def _bad_count(field: str, where: str, value: Any) -> _BadArchitecture | None:
    """The error for a value that is a number but no count (negative, fractional, beyond any range), or None
    where it is none of these (no number at all: not stated). A negative sliding window means none."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or _as_count(value) is not None:
        return None
    if field == "sliding_window" and value < 0:
        return None
    return _out_of_range(field, where, value)


def _out_of_range(field: str, where: str, value: int | float) -> _BadArchitecture:
    limit = ARCHITECTURE_LIMITS.get(field) or _OTHER_LIMITS.get(field) or 0
    shown = _brief(value) if isinstance(value, int) else f"{value:,g}"
    name = field.replace("_", " ")
    if isinstance(value, float) and not value.is_integer():
        return _BadArchitecture(f"{where} is {shown}, not a whole number (the physical range of {name} is "
                                f"1 to {limit:,})")
    return _BadArchitecture(f"{where} is {shown}, outside the physical range of {name} (1 to {limit:,})")


def _check_architecture(out: dict[str, ArchValue], sources: dict[str, str], head_dim_key: str = "head_dim") -> None:
    """Refuse numbers outside ARCHITECTURE_LIMITS, then shapes no model has: more KV heads than attention
    heads, more experts per token than experts, and a head width that is not a whole number (a hidden size
    the heads do not divide, with no `head_dim_key` to say otherwise). Other head widths are fine: MLA and
    Gemma heads are not hidden_size / heads wide."""
    for key, limit in (*ARCHITECTURE_LIMITS.items(), *_OTHER_LIMITS.items()):
        value = out.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= limit:
            raise _out_of_range(key, sources.get(key, key), value)

    def count(field: str) -> int:
        value = out.get(field)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def named(field: str) -> str:
        return f"{sources.get(field, field)} ({count(field):,})"

    if count("heads") and count("kv_heads") > count("heads"):
        raise _BadArchitecture(f"{named('kv_heads')} is more than {named('heads')}: a model has at most as many "
                               "KV heads as attention heads")
    if count("experts") and count("active_experts") > count("experts"):
        raise _BadArchitecture(f"{named('active_experts')} is more than {named('experts')}: a token is routed to "
                               "at most every expert")
    hidden, heads = count("hidden_size"), count("heads")
    if hidden and heads and out.get("head_dim") is None and hidden % heads:
        raise _BadArchitecture(f"{named('hidden_size')} is not divisible by {named('heads')}, and there is no "
                               f"{head_dim_key} to say how wide a head is: a head cannot be {hidden / heads:,.2f} "
                               "wide")


def _brief(value: Any, width: int = 80) -> str:
    """A short, always-printable form of an untrusted value (a huge int cannot even be printed whole)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"a {value.bit_length():,}-bit number" if value.bit_length() > 128 else f"{value:,}"
    try:
        text = repr(value) if len(value) < 100_000 else f"a {type(value).__name__} of {len(value):,} items"
    except Exception:
        text = f"a {type(value).__name__}"
    return text if len(text) <= width else text[: width - 1] + "…"


def _empty_architecture() -> dict[str, ArchValue]:
    return dict.fromkeys(ARCHITECTURE_KEYS)


# What a family's config leaves unsaid, by Hugging Face ``model_type`` and llama.cpp architecture name.

#: Q/K/V projections with biases, though the config has no key that says so.
_BIASED_ATTENTION = frozenset({
    "qwen2", "qwen2_moe", "qwen2moe", "qwen2_vl", "qwen2vl", "qwen2_5_vl", "qwen2_audio", "gpt2", "gpt_bigcode",
    "starcoder", "phi", "phi2", "bloom", "opt", "bert", "whisper", "gpt_neox", "gptneox"})
#: Config keys that say whether attention projections carry biases (Falcon's and Bark's `bias` covers every layer).
_BIAS_KEYS = ("attention_bias", "qkv_bias", "use_bias", "bias")
#: MLPs of an up and a down projection only, no gate.
_PLAIN_MLP = frozenset({
    "gpt2", "gpt_neox", "gptneox", "gpt_neo", "gptj", "phi", "phi2", "falcon", "starcoder", "starcoder2", "gpt_bigcode",
    "bloom", "opt", "mpt", "whisper", "bert", "roberta", "xlm-roberta", "xlm_roberta"})
#: MLPs with a gate beside the up projection (SwiGLU, GeGLU), by family prefix.
_GATED_MLP = ("llama", "mistral", "mixtral", "ministral", "qwen", "gemma", "phi3", "phimoe", "deepseek", "gpt_oss",
              "gpt-oss", "olmo", "granite", "cohere", "command-r", "internlm", "exaone")
#: Every Nth layer attends globally and the others through the sliding window, where the config does not say.
_SLIDING_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6, "cohere2": 4, "gpt_oss": 2, "gpt-oss": 2}


def _family_mlp(family: ArchValue) -> str | None:
    name = str(family or "")
    if name in _PLAIN_MLP:
        return "plain"
    return "gated" if name and name.startswith(_GATED_MLP) else None


def _family_attention_bias(family: ArchValue) -> bool | None:
    return True if str(family or "") in _BIASED_ATTENTION else None


def _sliding_pattern(sliding: Sequence[bool]) -> int | None:
    """Every how many layers one attends globally, from per-layer flags (True: through the window).

    None when none does. Global layers that are not evenly spaced give the smallest period with as
    many of them, so that no global layer's cache is left out."""
    full = [i for i, flag in enumerate(sliding) if not flag]
    if not full:
        return None
    period = full[0] + 1
    if all(flag == ((i + 1) % period != 0) for i, flag in enumerate(sliding)):
        return period
    return max(1, len(sliding) // len(full))


def _sorted_types(totals: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


def _as_count(value: Any) -> int | None:
    """A non-negative int from a header or config value, or None: configs hold nulls and floats."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**63:
        return int(value)
    return None


def _refuse_pickle(path: str) -> None:
    """Header readers never open a pickle, even when asked to by name."""
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise _fail(path, ImportErrorKind.UNSUPPORTED, "is a pickle file, which ModelDeck never opens",
                    "Use scan_path to register it by size, or convert it to safetensors.")


_NOT_REGULAR = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"),
                (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def _require_regular(path: str, mode: int) -> None:
    """Only regular files are read: a FIFO or device could block forever or never end."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise _fail(path, ImportErrorKind.UNSUPPORTED, "is a folder, not a model file",
                    "Pass the file, or scan the folder with scan_path.")
    what = next((name for test, name in _NOT_REGULAR if test(mode)), "special file")
    raise _fail(path, ImportErrorKind.UNSUPPORTED, f"is a {what}, not a regular file, so it was skipped unopened",
                "ModelDeck reads only regular files: point it at the model file itself.")


def _stat_size(path: str) -> int:
    """The size of a regular file (symbolic links followed once; a loop is an error)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _os_error(path, exc) from None
    _require_regular(path, info.st_mode)
    return info.st_size


def _torch_checkpoint(path: str) -> bool:
    """True when a pickle-named file starts as torch.save writes (its first bytes only: nothing is
    unpickled); valgrind's or firmware's ``.bin`` files and vim's ``tutor.pt`` do not."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | _EXTRA_OPEN_FLAGS)
        try:
            head = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return False
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return True
    if not head.startswith(b"PK\x03\x04") or len(head) < 30:
        return False
    name_len = int.from_bytes(head[26:28], "little")
    return head[30:30 + name_len].endswith(b"data.pkl")


_EXTRA_OPEN_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def _nonblocking_opener(path: str, flags: int) -> int:
    return os.open(path, flags | _EXTRA_OPEN_FLAGS)


def _open_regular(path: str) -> tuple[Any, int]:
    """(binary file, size) for a regular file. Anything else is refused before it is opened, and
    checked again once open (O_NONBLOCK: a FIFO swapped in between cannot block the open)."""
    _stat_size(path)
    try:
        f = open(path, "rb", opener=_nonblocking_opener)
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        info = os.fstat(f.fileno())
        _require_regular(path, info.st_mode)
    except BaseException:
        f.close()
        raise
    return f, info.st_size


# --------------------------------------------------------------------------------------------- GGUF


@lru_cache(maxsize=1)
def _ggml_tables() -> tuple[dict[int, tuple[int, int]], dict[int, str], dict[int, str]]:
    """(block size, type size) and names per ggml type id, and file-type preset names, from `gguf`."""
    import gguf

    sizes = {int(t): tuple(gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType if t in gguf.GGML_QUANT_SIZES}
    names = {int(t): t.name for t in gguf.GGMLQuantizationType}
    presets: dict[int, str] = {}
    for ftype in gguf.LlamaFileType:
        if ftype is gguf.LlamaFileType.GUESSED:
            continue
        presets[int(ftype)] = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return sizes, names, presets  # type: ignore[return-value]


_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


class _Short(Exception):
    """The header needs bytes past the end of the file."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class _ReadCap(Exception):
    """The header made the reader read more than MAX_GGUF_HEADER_READ bytes."""


class _GGUFArray(NamedTuple):
    item_type: int
    length: int
    values: tuple[Any, ...] | None  # kept for short scalar arrays only


class _GGUFTensor(NamedTuple):
    name: str
    type_id: int
    dims: tuple[int, ...]
    n_elements: int
    n_bytes: int
    offset: int


@dataclass(slots=True)
class _GGUFHeader:
    path: str
    size: int
    version: int
    kv: dict[str, Any]
    tensors: list[_GGUFTensor]
    data_offset: int


class _Source:
    """A forward reader over an open file that never reads past its size nor buffers more than 16 MiB."""

    __slots__ = ("f", "size", "buf", "base", "i", "chunk", "read_total")

    def __init__(self, f: Any, size: int) -> None:
        self.f = f
        self.size = size
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.i = 0  # cursor inside buf
        self.chunk = _FIRST_CHUNK
        self.read_total = 0  # bytes read so far: capped at MAX_GGUF_HEADER_READ

    @property
    def pos(self) -> int:
        return self.base + self.i

    def need(self, n: int) -> None:
        """Have n (small) bytes buffered at the cursor."""
        if self.i + n <= len(self.buf):
            return
        pos = self.base + self.i
        if pos + n > self.size:
            raise _Short(pos + n)
        rest = self.buf[self.i:]
        loaded_end = pos + len(rest)
        want = min(max(n - len(rest), self.chunk), self.size - loaded_end)
        self.chunk = min(self.chunk * 2, _MAX_CHUNK)
        if self.read_total + want > MAX_GGUF_HEADER_READ:
            want = max(n - len(rest), MAX_GGUF_HEADER_READ - self.read_total)
            if self.read_total + want > MAX_GGUF_HEADER_READ:
                raise _ReadCap()
        self.read_total += want
        self.f.seek(loaded_end)
        data = self.f.read(want)
        if len(rest) + len(data) < n:  # the file shrank while we read it
            raise _Short(pos + n)
        self.buf = rest + data
        self.base = pos
        self.i = 0

    def skip(self, n: int) -> None:
        if self.i + n <= len(self.buf):
            self.i += n
            return
        pos = self.base + self.i
        if pos + n > self.size:
            raise _Short(pos + n)
        self.buf = b""
        self.base = pos + n
        self.i = 0

    def take(self, n: int) -> bytes:
        self.need(n)
        data = self.buf[self.i:self.i + n]
        self.i += n
        return data

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        self.need(fmt.size)
        values = fmt.unpack_from(self.buf, self.i)
        self.i += fmt.size
        return values

    def skip_strings(self, count: int, u64: struct.Struct) -> None:
        """Step over `count` length-prefixed strings: the hot loop for tokenizer vocabularies."""
        unpack = u64.unpack_from
        buf, i = self.buf, self.i
        end = len(buf)
        for _ in range(count):
            if i + 8 > end:
                self.i = i
                self.need(8)
                buf, i = self.buf, self.i
                end = len(buf)
            n = unpack(buf, i)[0]
            i += 8 + n
            if i > end:
                self.i = i - n
                self.skip(n)
                buf, i = self.buf, self.i
                end = len(buf)
        self.i = i


class _GGUFParser:
    """Walks one GGUF header (spec v2/v3), checking every count and length before trusting it."""

    def __init__(self, path: str, src: _Source, endian: str) -> None:
        self.path = path
        self.src = src
        self.e = endian
        self.u32 = struct.Struct(endian + "I")
        self.u64 = struct.Struct(endian + "Q")
        self.scalars = {t: struct.Struct(endian + code) for t, code in _GGUF_SCALARS.items()}
        self.kept = 0
        self.walked = 0  # strings and nested arrays stepped over: capped at MAX_GGUF_WALKED_ITEMS

    def malformed(self, what: str) -> ModelImportError:
        return _fail(self.path, ImportErrorKind.MALFORMED, what)

    def room(self, count: int, min_item: int, what: str) -> None:
        """Refuse a count that could not fit in what is left of the file, before looping over it."""
        left = self.src.size - self.src.pos
        if count * min_item > left:
            raise _fail(self.path, ImportErrorKind.TRUNCATED,
                        f"the header declares {count:,} {what}, which need at least {count * min_item:,} bytes, "
                        f"but only {left:,} bytes are left in the file")

    def walk(self, count: int, what: str) -> None:
        """Budget `count` items that are stepped over one by one, before stepping over any of them."""
        self.walked += count
        if self.walked > MAX_GGUF_WALKED_ITEMS:
            so_far = "" if self.walked == count else f", {self.walked:,} strings and arrays in all"
            raise _fail(self.path, ImportErrorKind.OVERSIZED_HEADER,
                        f"the header declares {count:,} {what}{so_far} (limit {MAX_GGUF_WALKED_ITEMS:,} in a whole "
                        "header; the largest real vocabularies hold about 260,000 tokens)")

    def string(self, limit: int | None, what: str) -> str | None:
        """A key or name (length capped by `limit`, always kept), or a value (kept within a budget)."""
        (n,) = self.src.unpack(self.u64)
        if limit is not None:
            if n > limit:
                raise self.malformed(f"a {what} of {n:,} bytes (limit {limit:,})")
        elif n > _KEEP_STRING_BYTES or self.kept + n > _KEEP_TOTAL_BYTES:
            self.src.skip(n)
            return None
        else:
            self.kept += n
        return self.src.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, key: str, depth: int = 0) -> Any:
        scalar = self.scalars.get(vtype)
        if scalar is not None:
            return self.src.unpack(scalar)[0]
        if vtype == _GGUF_STRING:
            return self.string(None, f"string value for {key!r}")
        if vtype != _GGUF_ARRAY:
            raise self.malformed(f"unknown value type {vtype} for key {key!r}")
        if depth >= 3:
            raise self.malformed(f"arrays nested more than 3 deep in key {key!r}")
        (item_type,) = self.src.unpack(self.u32)
        (length,) = self.src.unpack(self.u64)
        if item_type == _GGUF_STRING:
            self.room(length, 8, f"strings in {key!r}")
            self.walk(length, f"strings in {key!r}")
            self.src.skip_strings(length, self.u64)
            return _GGUFArray(item_type, length, None)
        item = self.scalars.get(item_type)
        if item is not None:
            self.room(length, item.size, f"items in {key!r}")
            if length <= _KEEP_ARRAY_ITEMS:
                values = self.src.unpack(struct.Struct(f"{self.e}{length}{_GGUF_SCALARS[item_type]}"))
                return _GGUFArray(item_type, length, values)
            self.src.skip(length * item.size)
            return _GGUFArray(item_type, length, None)
        if item_type == _GGUF_ARRAY:
            self.room(length, 12, f"nested arrays in {key!r}")
            self.walk(length, f"nested arrays in {key!r}")
            for _ in range(length):
                self.value(_GGUF_ARRAY, key, depth + 1)
            return _GGUFArray(item_type, length, None)
        raise self.malformed(f"unknown array item type {item_type} for key {key!r}")

    def parse(self, version: int) -> _GGUFHeader:
        sizes, names, _ = _ggml_tables()
        src = self.src
        tensor_count, kv_count = src.unpack(struct.Struct(self.e + "QQ"))
        if tensor_count > MAX_GGUF_TENSORS:
            raise _fail(self.path, ImportErrorKind.OVERSIZED_HEADER,
                        f"the header declares {tensor_count:,} tensors (limit {MAX_GGUF_TENSORS:,})")
        if kv_count > MAX_GGUF_KV:
            raise _fail(self.path, ImportErrorKind.OVERSIZED_HEADER,
                        f"the header declares {kv_count:,} metadata keys (limit {MAX_GGUF_KV:,})")
        self.room(tensor_count * 24 + kv_count * 13, 1, "bytes of tensor and key descriptions")

        kv: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self.string(MAX_GGUF_KEY_BYTES, "metadata key")
            (vtype,) = src.unpack(self.u32)
            value = self.value(vtype, key or "?")
            if key in kv:
                raise self.malformed(f"the metadata key {key!r} appears twice")
            if key is not None:
                kv[key] = value

        tensors: list[_GGUFTensor] = []
        seen: set[str] = set()
        dims_formats = [struct.Struct(f"{self.e}{n}Q") for n in range(MAX_GGUF_DIMS + 1)]
        for _ in range(tensor_count):
            name = self.string(MAX_GGUF_NAME_BYTES, "tensor name") or ""
            (n_dims,) = src.unpack(self.u32)
            if n_dims > MAX_GGUF_DIMS:
                raise self.malformed(f"tensor {name!r} has {n_dims:,} dimensions (ggml allows {MAX_GGUF_DIMS})")
            dims = src.unpack(dims_formats[n_dims])
            type_id, offset = src.unpack(self.u32)[0], src.unpack(self.u64)[0]
            if name in seen:
                raise self.malformed(f"the tensor name {name!r} appears twice")
            seen.add(name)
            block = sizes.get(type_id)
            if block is None:
                raise _fail(self.path, ImportErrorKind.UNSUPPORTED,
                            f"tensor {name!r} has ggml type {type_id}, unknown to this version of the gguf package")
            n_elements = 1
            for dim in dims:
                n_elements *= dim
            if n_elements > _INT64_MAX:
                raise self.malformed(f"tensor {name!r} has shape {list(dims)}, more elements than ggml can index")
            block_size, type_size = block
            if (dims[0] if dims else 1) % block_size:
                raise self.malformed(f"tensor {name!r} rows of {dims[0] if dims else 1} values are not whole "
                                     f"{names[type_id]} blocks of {block_size}")
            tensors.append(_GGUFTensor(name, type_id, dims, n_elements, n_elements // block_size * type_size, offset))

        raw_alignment = kv.get("general.alignment", 32)
        alignment = _as_count(raw_alignment)
        if not alignment or alignment & (alignment - 1):
            raise self.malformed(f"general.alignment is {raw_alignment!r}, not a power of two")
        data_offset = -(-src.pos // alignment) * alignment
        for tensor in tensors:
            if tensor.offset % alignment:
                raise self.malformed(
                    f"tensor {tensor.name!r} data offset {tensor.offset:,} is not aligned to {alignment}")
            end = data_offset + tensor.offset + tensor.n_bytes
            if end > src.size:
                raise _fail(self.path, ImportErrorKind.TRUNCATED,
                            f"tensor {tensor.name!r} ends at byte {end:,} but the file has {src.size:,} bytes")
        # Each tensor ends inside the file; together they can claim more than it holds only by overlapping.
        spans = sorted((t.offset, t.offset + t.n_bytes, t.name) for t in tensors if t.n_bytes)
        for (first_begin, end, first), (begin, second_end, second) in pairwise(spans):
            if begin < end:
                declared = sum(t.n_bytes for t in tensors)
                raise self.malformed(
                    f"tensor {second!r} data (bytes {begin:,} to {second_end:,}) overlaps tensor {first!r} (bytes "
                    f"{first_begin:,} to {end:,}); the header declares {declared:,} bytes of tensors, the file "
                    f"holds {src.size - data_offset:,} after its {data_offset:,}-byte header")
        return _GGUFHeader(self.path, src.size, version, kv, tensors, data_offset)


def _parse_gguf(path: str) -> _GGUFHeader:
    """Read one GGUF file's header; any failure is a ModelImportError with the right kind."""
    f, size = _open_regular(path)
    with f:
        try:
            src = _Source(f, size)
            magic = src.take(4)
            if magic != b"GGUF":
                raise _fail(path, ImportErrorKind.MALFORMED, f"not a GGUF file (it starts with {magic!r}, not b'GGUF')")
            raw = src.take(4)
            endian = "<"
            version = struct.unpack("<I", raw)[0]
            if version and not version & 0xFFFF:  # written on a big-endian machine
                endian, version = ">", struct.unpack(">I", raw)[0]
            if version == 1:
                raise _fail(path, ImportErrorKind.UNSUPPORTED, "GGUF version 1 (2023) is obsolete",
                            "Re-convert the model with a current llama.cpp.")
            if version not in (2, 3):
                kind = ImportErrorKind.UNSUPPORTED if 0 < version < 1000 else ImportErrorKind.MALFORMED
                raise _fail(path, kind, f"GGUF version {version} (this reader knows 2 and 3)")
            return _GGUFParser(path, src, endian).parse(version)
        except ModelImportError:
            raise
        except _Short as short:
            raise _fail(path, ImportErrorKind.TRUNCATED,
                        f"the GGUF header needs {short.needed:,} bytes but the file has {size:,}") from None
        except _ReadCap:
            raise _fail(path, ImportErrorKind.OVERSIZED_HEADER,
                        f"the GGUF header needs more than {MAX_GGUF_HEADER_READ:,} bytes read (real headers need "
                        "at most a few tens of MiB)") from None
        except OSError as exc:
            raise _os_error(path, exc) from None
        except ImportError:
            raise _fail(path, ImportErrorKind.UNSUPPORTED, "reading GGUF needs the gguf package",
                        "Install it: pip install gguf.") from None
        except Exception as exc:  # untrusted input: nothing else may escape
            raise _fail(path, ImportErrorKind.MALFORMED,
                        f"unreadable GGUF header ({type(exc).__name__}: {exc})") from None


def _gguf_parts(path: str) -> tuple[list[str], list[str]]:
    """The parts of a split GGUF (`x-00001-of-00003.gguf`) that `path` belongs to: (present, missing)."""
    folder, name = os.path.split(path)
    match = _GGUF_SPLIT.match(name)
    if not match:
        return [path], []
    count = int(match["count"])
    if not 1 <= int(match["no"]) <= count <= 10_000:
        return [path], []
    try:
        here = set(os.listdir(folder or "."))
    except OSError as exc:
        raise _os_error(folder, exc) from None
    expected = [f"{match['stem']}-{i:05d}-of-{match['count']}.gguf" for i in range(1, count + 1)]
    return _present(folder, expected, here)


def _gguf_number(kv: dict[str, Any], key: str) -> int | None:
    value = kv.get(key)
    if isinstance(value, _GGUFArray):  # per-layer values (OpenELM, Jamba): the largest one
        if value.values is None:
            return None
        counts = [c for c in (_as_count(v) for v in value.values) if c is not None]
        return max(counts) if counts else None
    return _as_count(value)


def _gguf_architecture(kv: dict[str, Any], tensors: dict[str, _GGUFTensor]) -> dict[str, ArchValue]:
    arch = kv.get("general.architecture")
    out = _empty_architecture()
    if not isinstance(arch, str) or not arch:
        return out

    sources: dict[str, str] = {}

    def num(field: str, key: str) -> int | None:
        bad = _bad_count(field, f"{arch}.{key}", kv.get(f"{arch}.{key}"))
        if bad is not None:
            raise bad
        value = _gguf_number(kv, f"{arch}.{key}")
        if value is not None:
            sources[field] = f"{arch}.{key}"
        return None if value == 0 and field in _ZERO_MEANS_UNUSED else value

    hidden, heads = num("hidden_size", "embedding_length"), num("heads", "attention.head_count")
    out["family"] = arch
    out["layers"] = num("layers", "block_count")
    out["hidden_size"] = hidden
    out["intermediate_size"] = num("intermediate_size", "feed_forward_length")
    out["heads"] = heads
    kv_heads = num("kv_heads", "attention.head_count_kv")
    out["kv_heads"] = kv_heads if kv_heads is not None else heads  # llama.cpp's default
    if kv_heads is None:
        sources["kv_heads"] = sources.get("heads", "kv_heads")
    head_dim = num("head_dim", "attention.key_length")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads if hidden % heads == 0 else None
    out["head_dim"] = head_dim
    tokens = kv.get("tokenizer.ggml.tokens")
    vocab = tokens.length if isinstance(tokens, _GGUFArray) else num("vocab_size", "vocab_size")
    if isinstance(tokens, _GGUFArray):
        sources["vocab_size"] = "the length of tokenizer.ggml.tokens"
    embedding = tensors.get("token_embd.weight")
    if vocab is None and embedding is not None and len(embedding.dims) >= 2:
        vocab = embedding.dims[1]
        sources["vocab_size"] = "the second dimension of token_embd.weight"
    out["vocab_size"] = vocab
    out["max_context"] = num("max_context", "context_length")
    out["sliding_window"] = num("sliding_window", "attention.sliding_window")
    out["sliding_window_pattern"] = _gguf_sliding_pattern(kv, arch, out["sliding_window"])
    out["experts"] = num("experts", "expert_count")
    out["active_experts"] = num("active_experts", "expert_used_count")
    out["expert_intermediate_size"] = num("expert_intermediate_size", "expert_feed_forward_length")
    out["shared_experts"] = num("shared_experts", "expert_shared_count")
    out["kv_lora_rank"] = num("kv_lora_rank", "attention.kv_lora_rank")
    if out["kv_lora_rank"]:  # with multi-head latent attention, the RoPE part of the key is cached beside the latent
        out["qk_rope_head_dim"] = num("qk_rope_head_dim", "rope.dimension_count")
    if embedding is not None:
        out["tie_word_embeddings"] = "output.weight" not in tensors
    if "blk.0.attn_q.bias" in tensors or "blk.0.attn_qkv.bias" in tensors:
        out["attention_bias"] = True
    elif "blk.0.attn_q.weight" in tensors or "blk.0.attn_qkv.weight" in tensors:
        out["attention_bias"] = False
    out["mlp_kind"] = _family_mlp(arch) or _gguf_mlp_kind(tensors, out["intermediate_size"])
    _check_architecture(out, sources, f"{arch}.attention.key_length")
    return out


def _gguf_sliding_pattern(kv: dict[str, Any], arch: str, window: ArchValue) -> int | None:
    """Every how many layers one attends globally: llama.cpp's key (a period, or a flag per layer, True where
    the layer slides), or the family's known pattern."""
    if not window:
        return None
    value = kv.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(value, _GGUFArray):
        return _sliding_pattern([bool(v) for v in value.values]) if value.values else None
    period = _as_count(value)
    return period if period else _SLIDING_PATTERN.get(arch)


def _gguf_mlp_kind(tensors: dict[str, _GGUFTensor], width: ArchValue) -> str | None:
    """"gated" when the first block has a gate (or an up projection twice the feed-forward width: gate and up
    fused, as Phi-3's), "plain" when it has an up projection alone."""
    if "blk.0.ffn_gate.weight" in tensors or "blk.0.ffn_gate_exps.weight" in tensors:
        return "gated"
    up = tensors.get("blk.0.ffn_up.weight")
    if up is None or len(up.dims) < 2:
        return None
    return "gated" if isinstance(width, int) and up.dims[1] == 2 * width else "plain"


def _gguf_model(headers: list[_GGUFHeader]) -> ScannedModel:
    sizes, names, presets = _ggml_tables()
    main = headers[0]
    kv = main.kv
    tensors: dict[str, _GGUFTensor] = {}
    by_type: dict[str, int] = {}
    for header in headers:
        for tensor in header.tensors:
            tensors[tensor.name] = tensor
            type_name = names[tensor.type_id]
            by_type[type_name] = by_type.get(type_name, 0) + tensor.n_bytes
    notes: list[str] = []
    bytes_by_type = _sorted_types(by_type)
    raw_ftype = _as_count(kv.get("general.file_type"))
    file_type = presets.get(raw_ftype) if raw_ftype is not None else None
    if file_type is None and bytes_by_type:
        file_type = bytes_by_type[0][0]
        why = "missing" if raw_ftype is None else f"{raw_ftype} is unknown"
        notes.append(f"general.file_type {why}: file_type is the dominant tensor type")
    if not tensors:
        raise _fail(main.path, ImportErrorKind.UNSUPPORTED,
                    "holds no tensors, so it is not a model (a vocabulary-only or metadata-only GGUF)",
                    "Scan the model's weights file itself.")
    if not any(t.n_elements for t in tensors.values()):
        raise _fail(main.path, ImportErrorKind.MALFORMED,
                    f"its {len(tensors):,} tensors hold no values at all (every shape has a 0)")
    try:
        architecture = _gguf_architecture(kv, tensors)
    except _BadArchitecture as exc:
        raise _fail(main.path, ImportErrorKind.MALFORMED, f"the header says {exc}") from None
    if len(headers) > 1:
        notes.append(f"split GGUF: {len(headers)} parts")
    kind = kv.get("general.type")
    if isinstance(kind, str) and kind not in ("", "model"):
        notes.append(f"general.type is {kind!r}, not a standalone model")
    name = kv.get("general.name")
    if not isinstance(name, str) or not name.strip():
        base = os.path.basename(main.path)
        match = _GGUF_SPLIT.match(base)
        name = match["stem"] if match else re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE)
    return ScannedModel(
        path=main.path,
        name=name.strip(),
        format="gguf",
        files=tuple(h.path for h in headers),
        file_bytes=sum(h.size for h in headers),
        weight_bytes=sum(by_type.values()),
        exact=True,
        parameters=sum(t.n_elements for t in tensors.values()),
        bytes_by_type=bytes_by_type,
        file_type=file_type,
        architecture=architecture,
        notes=tuple(notes),
    )


def _gguf_reader_figures(path: str) -> tuple[list[tuple[str, str, int, int]], int | None]:
    """Tensor figures as `gguf.GGUFReader` sees them, with its memory map closed before returning."""
    import gguf

    failure = None
    reader = None
    try:
        reader = gguf.GGUFReader(path)
        figures = [(t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors]
        tokens = reader.get_field("tokenizer.ggml.tokens")
        n_tokens = len(tokens.data) if tokens is not None else None
        del tokens
    except Exception as exc:
        # Keep only the text: the exception's traceback holds the reader's frames, and so its map.
        failure = f"gguf.GGUFReader cannot read it ({type(exc).__name__}: {exc})"
    finally:
        if reader is not None:
            mapping = getattr(reader.data, "_mmap", None)
            reader.tensors, reader.fields, reader.data = [], {}, None  # type: ignore[assignment]
            del reader
            if mapping is not None:
                try:
                    mapping.close()
                except (BufferError, ValueError):  # a view survived; it is freed with it
                    pass
    if failure is not None:
        raise _fail(path, ImportErrorKind.MALFORMED, failure)
    return figures, n_tokens


def _deep_check(headers: list[_GGUFHeader], model: ScannedModel) -> None:
    _, names, _ = _ggml_tables()
    for header in headers:
        theirs, n_tokens = _gguf_reader_figures(header.path)
        ours = [(t.name, names[t.type_id], t.n_elements, t.n_bytes) for t in header.tensors]
        if ours != theirs:
            padded = zip(ours + [None] * len(theirs), theirs + [None] * len(ours), strict=True)
            diff = next((a, b) for a, b in padded if a != b)
            raise _fail(header.path, ImportErrorKind.MALFORMED,
                        f"ModelDeck and gguf.GGUFReader disagree on its tensors (ours {diff[0]}, theirs {diff[1]})",
                        "Report this file to the ModelDeck developers.")
        tokens = header.kv.get("tokenizer.ggml.tokens")
        if isinstance(tokens, _GGUFArray) and tokens.length != n_tokens:
            raise _fail(header.path, ImportErrorKind.MALFORMED,
                        f"ModelDeck counts {tokens.length} tokens, gguf.GGUFReader {n_tokens}",
                        "Report this file to the ModelDeck developers.")


def _read_gguf_parts(parts: Sequence[str], missing: Sequence[str], on_file: Callable[[str], None],
                     deep_check: bool = False) -> ScannedModel:
    if missing:
        total = len(parts) + len(missing)
        raise _fail(missing[0], ImportErrorKind.NOT_FOUND,
                    f"part(s) {', '.join(os.path.basename(m) for m in missing)} of this {total}-part GGUF are missing")
    headers = []
    for part in parts:
        headers.append(_parse_gguf(part))
        on_file(part)
    model = _gguf_model(headers)
    if deep_check:
        _deep_check(headers, model)
    return model


def read_gguf(path: str | os.PathLike[str], *, deep_check: bool = False) -> ScannedModel:
    """Exact weight bytes, parameters, types and architecture of a GGUF model, from its header.

    Given any part of a split model (`-00001-of-00003.gguf`), all parts are read, as llama.cpp does.
    `deep_check` also reads the file with `gguf.GGUFReader` and fails if the two disagree: slow
    (numpy per token), for diagnosing a file, not for scanning.
    """
    full = os.path.abspath(os.fspath(path))
    try:
        _refuse_pickle(full)
        _stat_size(full)
        parts, missing = _gguf_parts(full)
        return _read_gguf_parts(parts, missing, lambda _: None, deep_check)
    except ModelImportError:
        raise
    except Exception as exc:
        raise _unexpected(full, exc) from None


# -------------------------------------------------------------------------------------- safetensors

# Bits per element, from the safetensors Dtype enum (0.8); packed sub-byte types must end on a byte.
_ST_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
_ST_MAX_DIMS = 64  # torch's limit on dimensions; safetensors writes no more
_ST_SHARD = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.(?P<ext>safetensors|bin)$")


class _STTensor(NamedTuple):
    name: str
    dtype: str
    n_elements: int
    n_bytes: int


@dataclass(slots=True)
class _STHeader:
    path: str
    size: int
    tensors: list[_STTensor]


def _parse_safetensors(path: str) -> _STHeader:
    """Read and validate one safetensors header with bounded reads."""
    f, size = _open_regular(path)
    with f:
        try:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _fail(path, ImportErrorKind.TRUNCATED,
                            f"the file has {size} bytes, fewer than the 8-byte safetensors header length")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_SAFETENSORS_HEADER_BYTES:
                raise _fail(path, ImportErrorKind.OVERSIZED_HEADER,
                            f"the header claims {n:,} bytes (limit {MAX_SAFETENSORS_HEADER_BYTES:,})")
            if 8 + n > size:
                raise _fail(path, ImportErrorKind.TRUNCATED,
                            f"the header claims {n:,} bytes but the file has only {size - 8:,} after the length")
            raw = f.read(n)
            if len(raw) != n:
                raise _fail(path, ImportErrorKind.TRUNCATED, f"read {len(raw):,} of the header's {n:,} bytes")
            header = json.loads(raw.decode("utf-8"))
        except ModelImportError:
            raise
        except OSError as exc:
            raise _os_error(path, exc) from None
        except Exception as exc:  # JSON, UTF-8, recursion, digit-limit errors: all mean a bad header
            raise _fail(path, ImportErrorKind.MALFORMED,
                        f"the safetensors header is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise _fail(path, ImportErrorKind.MALFORMED, "the safetensors header is not a JSON object")
    return _STHeader(path, size, _validate_safetensors(path, header, size - 8 - n))


def _validate_safetensors(path: str, header: dict[str, Any], data_len: int) -> list[_STTensor]:
    def bad(name: str, what: str) -> ModelImportError:
        return _fail(path, ImportErrorKind.MALFORMED, f"tensor {_brief(name)}: {what}")

    tensors: list[_STTensor] = []
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise bad(name, "its entry is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise bad(name, f"dtype {_brief(dtype)} is not a string")
        bits = _ST_BITS.get(dtype)
        if bits is None:
            raise _fail(path, ImportErrorKind.UNSUPPORTED,
                        f"tensor {_brief(name)} has dtype {_brief(dtype)}, unknown to ModelDeck")
        if not isinstance(shape, list) or any(type(d) is not int or d < 0 for d in shape):
            raise bad(name, f"shape {_brief(shape)} is not a list of non-negative integers")
        if len(shape) > _ST_MAX_DIMS:
            raise bad(name, f"its shape has {len(shape):,} dimensions (torch allows {_ST_MAX_DIMS})")
        if any(d > _INT64_MAX for d in shape):
            raise bad(name, f"shape {_brief(shape)} has a dimension of {_brief(max(shape))}, over 2**63")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or any(type(o) is not int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
            raise bad(name, f"data_offsets {_brief(offsets)} are not [begin, end] with 0 <= begin <= end")
        begin, end = offsets
        if end > data_len:
            raise _fail(path, ImportErrorKind.TRUNCATED, f"tensor {_brief(name)} ends at data byte {_brief(end)} "
                                                         f"but the file holds {data_len:,} bytes of data")
        n_elements = math.prod(shape)
        if n_elements > _INT64_MAX:
            raise bad(name, f"shape {_brief(shape)} has more than 2**63 elements")
        n_bits = n_elements * bits
        if n_bits % 8:
            raise bad(name, f"{n_elements:,} {dtype} values do not end on a byte boundary")
        if end - begin != n_bits // 8:
            raise bad(name, f"shape {shape} of {dtype} needs {n_bits // 8:,} bytes "
                            f"but data_offsets span {end - begin:,}")
        tensors.append(_STTensor(name, dtype, n_elements, end - begin))
        spans.append((begin, end, name))
    # Every tensor ends inside the data, so the declared bytes can exceed the file only by overlapping.
    spans.sort()
    for (first_begin, end, first), (begin, second_end, second) in pairwise(spans):
        if begin < end:
            declared = sum(t.n_bytes for t in tensors)
            raise bad(second, f"its data (bytes {begin:,} to {second_end:,}) overlaps tensor {_brief(first)} "
                              f"(bytes {first_begin:,} to {end:,}); the header declares {declared:,} bytes of "
                              f"tensors, the file holds {data_len:,}")
    return tensors


def _read_json(path: str, what: str) -> Any:
    """A small JSON side file (config, shard index), size-capped before reading."""
    f, size = _open_regular(path)
    try:
        with f:
            if size > MAX_JSON_SIDE_FILE_BYTES:
                raise _fail(path, ImportErrorKind.OVERSIZED_HEADER,
                            f"the {what} is {size:,} bytes (limit {MAX_JSON_SIDE_FILE_BYTES:,})")
            raw = f.read(MAX_JSON_SIDE_FILE_BYTES + 1)
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except Exception as exc:
        raise _fail(path, ImportErrorKind.MALFORMED,
                    f"the {what} is not valid JSON ({type(exc).__name__}: {exc})") from None


def _read_index(path: str) -> tuple[list[str], int | None]:
    """Shard files named by a `*.index.json` weight map (relative, inside its folder), and total_size."""
    index = _read_json(path, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise _fail(path, ImportErrorKind.MALFORMED, "the shard index has no weight_map object")
    files: list[str] = []
    for shard in weight_map.values():
        if not isinstance(shard, str) or not shard:
            raise _fail(path, ImportErrorKind.MALFORMED, f"the weight_map names a shard {shard!r}")
        norm = os.path.normpath(shard)
        if os.path.isabs(norm) or norm.split(os.sep)[0] == ".." or "\\" in shard:
            raise _fail(path, ImportErrorKind.MALFORMED, f"the weight_map points outside its folder: {shard!r}")
        if norm not in files:
            files.append(norm)
    if not files:
        raise _fail(path, ImportErrorKind.MALFORMED, "the shard index's weight_map is empty")
    metadata = index.get("metadata")
    total = _as_count(metadata.get("total_size")) if isinstance(metadata, dict) else None
    return sorted(files), total


def _read_config(folder: str) -> tuple[dict[str, Any] | None, str | None]:
    """config.json beside the weights, or (None, why it could not be used)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None, None
    try:
        config = _read_json(path, "config.json")
    except ModelImportError as exc:
        return None, f"{_CONFIG_UNUSED}{exc.message}"
    if not isinstance(config, dict):
        return None, f"{_CONFIG_UNUSED}it is not a JSON object"
    return config, None


def _config_numbers(config: dict[str, Any], out: dict[str, ArchValue]) -> None:
    text = config.get("text_config")
    src = {**config, **text} if isinstance(text, dict) else config
    sources: dict[str, str] = {}

    def first(field: str, *keys: str) -> int | None:
        for key in keys:
            where = f"text_config.{key}" if isinstance(text, dict) and key in text else key
            bad = _bad_count(field, where, src.get(key))
            if bad is not None:
                raise bad
            value = _as_count(src.get(key))
            if value is not None:
                sources[field] = where
                return None if value == 0 and field in _ZERO_MEANS_UNUSED else value
        return None

    family = config.get("model_type")
    out["family"] = family if isinstance(family, str) and family else None
    # The language model's own family (a multimodal config's text_config) says what its config leaves unsaid.
    text_family = src.get("model_type") if isinstance(src.get("model_type"), str) else ""
    # Encoder-decoder models (Whisper): the decoder is the part with a KV cache.
    out["layers"] = first("layers", "decoder_layers", "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    if "decoder_layers" in sources.values():
        out["encoder_layers"] = first("encoder_layers", "encoder_layers")
    hidden = first("hidden_size", "hidden_size", "n_embd", "d_model")
    heads = first("heads", "num_attention_heads", "n_head", "num_heads", "decoder_attention_heads")
    out["hidden_size"] = hidden
    out["intermediate_size"] = first("intermediate_size", "intermediate_size", "n_inner", "ffn_dim", "decoder_ffn_dim")
    out["heads"] = heads
    kv_heads = first("kv_heads", "num_key_value_heads", "num_kv_heads", "multi_query_group_num")
    out["kv_heads"] = kv_heads if kv_heads is not None else heads  # transformers' default
    if kv_heads is None:
        sources["kv_heads"] = sources.get("heads", "kv_heads")
    head_dim = first("head_dim", "head_dim")
    out["kv_lora_rank"] = first("kv_lora_rank", "kv_lora_rank")
    if out["kv_lora_rank"]:  # multi-head latent attention (DeepSeek V2/V3): the cache holds the latent and this key
        rope = out["qk_rope_head_dim"] = first("qk_rope_head_dim", "qk_rope_head_dim")
        nope = _as_count(src.get("qk_nope_head_dim"))
        if head_dim is None and nope and rope:
            head_dim = nope + rope  # the query/key head: its RoPE and position-free halves
    if head_dim is None and hidden and heads and hidden % heads == 0:
        head_dim = hidden // heads
    out["head_dim"] = head_dim
    out["vocab_size"] = first("vocab_size", "vocab_size", "padded_vocab_size")
    out["max_context"] = first("max_context", "max_position_embeddings", "n_positions", "max_sequence_length",
                               "seq_length", "max_target_positions")
    out["sliding_window"], out["sliding_window_pattern"] = _config_sliding(src, first, text_family or out["family"])
    out["experts"] = first("experts", "num_local_experts", "num_experts", "n_routed_experts")
    out["active_experts"] = first("active_experts", "num_experts_per_tok")
    expert_width = first("expert_intermediate_size", "moe_intermediate_size")
    out["expert_intermediate_size"] = expert_width
    shared = first("shared_experts", "n_shared_experts", "num_shared_experts")
    shared_width = _as_count(src.get("shared_expert_intermediate_size"))
    if shared is None and shared_width:  # Qwen2-MoE: one shared expert as wide as this many routed ones
        shared = -(-shared_width // expert_width) if expert_width else 1
        sources["shared_experts"] = "shared_expert_intermediate_size"
    out["shared_experts"] = shared
    tie = src.get("tie_word_embeddings")
    if isinstance(tie, bool):
        out["tie_word_embeddings"] = tie
    bias = next((src[key] for key in _BIAS_KEYS if isinstance(src.get(key), bool)), None)
    out["attention_bias"] = bias if bias is not None else _family_attention_bias(text_family or out["family"])
    out["mlp_kind"] = _family_mlp(text_family or out["family"])
    _check_architecture(out, sources)


def _config_sliding(src: dict[str, Any], first: Callable[..., int | None],
                    family: ArchValue) -> tuple[int | None, int | None]:
    """(window, every how many layers one attends globally) from a config."""
    window = first("sliding_window", "sliding_window")
    if src.get("use_sliding_window") is False:
        return None, None
    kinds = src.get("layer_types")
    if isinstance(kinds, list) and kinds and all(k in ("sliding_attention", "full_attention") for k in kinds):
        sliding = [k == "sliding_attention" for k in kinds]
        if not any(sliding):
            return None, None
        return window, _sliding_pattern(sliding)
    pattern = first("sliding_window_pattern", "sliding_window_pattern")
    if window and pattern is None:
        pattern = _SLIDING_PATTERN.get(str(family or ""))
    return window, pattern if window else None


def _config_architecture(config: dict[str, Any] | None, tensor_names: Iterable[str] = (),
                         notes: list[str] | None = None, *, refuse_at: str | None = None) -> dict[str, ArchValue]:
    """Architecture from a Hugging Face config.json (text_config first for multimodal configs).

    A number outside ARCHITECTURE_LIMITS, or numbers that contradict each other, mean the config is not
    used: a note in `notes` says which key and why, and the architecture is what the tensor names alone
    tell. With `refuse_at` (the config's path), where the config is all there is, they are a
    :class:`ModelImportError` instead.
    """
    out = _empty_architecture()
    names = list(tensor_names)
    if config is not None:
        try:
            _config_numbers(config, out)
        except _BadArchitecture as exc:
            if refuse_at is not None:
                raise _fail(refuse_at, ImportErrorKind.MALFORMED, str(exc), _CONFIG_ADVICE) from None
            out = _empty_architecture()
            if notes is not None:
                notes.append(f"{_CONFIG_UNUSED}{exc}")
    if out["tie_word_embeddings"] is None and names:
        if any(n.endswith("lm_head.weight") for n in names):
            out["tie_word_embeddings"] = False
        elif any(n.endswith("embed_tokens.weight") for n in names):
            out["tie_word_embeddings"] = True
    return out


#: Where a multimodal checkpoint keeps its vision tower and projector (Qwen2-VL, LLaVA, Gemma 3, Phi-3-vision).
_VISION_PREFIXES = frozenset({"visual", "vision_tower", "vision_model", "multi_modal_projector", "mm_projector",
                              "vision_embed_tokens"})


def _vision_tensor(name: str) -> bool:
    """True for a tensor of the vision tower or its projector (``visual.``, ``model.vision_tower.``...)."""
    return name.removeprefix("model.").split(".", 1)[0] in _VISION_PREFIXES


def _safetensors_model(path: str, name: str, headers: list[_STHeader], config: dict[str, Any] | None,
                       notes: list[str], index_total: int | None) -> ScannedModel:
    by_type: dict[str, int] = {}
    parameters = 0
    names: list[str] = []
    for header in headers:
        for tensor in header.tensors:
            by_type[tensor.dtype] = by_type.get(tensor.dtype, 0) + tensor.n_bytes
            parameters += tensor.n_elements
            names.append(tensor.name)
    weight_bytes = sum(by_type.values())
    if not names:
        raise _fail(path, ImportErrorKind.UNSUPPORTED, "holds no tensors, so it is not a model",
                    "Scan the model's weights file itself.")
    if not parameters:
        raise _fail(path, ImportErrorKind.MALFORMED,
                    f"its {len(names):,} tensors hold no values at all (every shape has a 0)")
    architecture = _config_architecture(config, names, notes)
    if config is not None and isinstance(config.get("vision_config"), dict):
        vision = sum(t.n_elements for h in headers for t in h.tensors if _vision_tensor(t.name))
        if vision:
            architecture["components"] = {"vision_encoder": vision}
    if index_total is not None and index_total != weight_bytes:
        notes.append(f"the shard index says total_size {_brief(index_total)}; the headers hold {weight_bytes:,}")
    bytes_by_type = _sorted_types(by_type)
    return ScannedModel(
        path=path,
        name=name,
        format="safetensors",
        files=tuple(h.path for h in headers),
        file_bytes=sum(h.size for h in headers),
        weight_bytes=weight_bytes,
        exact=True,
        parameters=parameters,
        bytes_by_type=bytes_by_type,
        file_type=bytes_by_type[0][0] if bytes_by_type else None,
        architecture=architecture,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------------------ folder groups


def _folder_name(folder: str) -> str:
    """A folder's name; a diffusers component folder is named with its pipeline (`sdxl/unet`)."""
    base = os.path.basename(os.path.normpath(folder))
    parent = os.path.dirname(os.path.normpath(folder))
    if os.path.isfile(os.path.join(parent, "model_index.json")):
        return f"{os.path.basename(parent)}/{base}"
    return base


@dataclass(slots=True)
class _Group:
    """The files of one model found in one folder, before any header is read."""

    kind: str  # "gguf" | "safetensors" | "pytorch-pickle"
    folder: str
    files: list[str]
    missing: list[str] = field(default_factory=list)
    index: str | None = None
    index_total: int | None = None
    path: str = ""
    notes: list[str] = field(default_factory=list)
    #: A llama.cpp vision projector (``mmproj-*.gguf``) beside a GGUF model: read with it, last in ``files``.
    projector: str | None = None

    def name(self) -> str:
        stem = os.path.basename(self.files[0] if self.files else self.path).split(".")[0]
        parts = [f for f in self.files if f != self.projector]
        single = len(parts) + len(self.missing) == 1 and self.index is None
        if single and stem not in _GENERIC_STEMS and not os.path.isfile(os.path.join(self.folder, "config.json")):
            return os.path.basename(self.files[0]).rsplit(".", 1)[0]
        return _folder_name(self.folder)

    def read(self, on_file: Callable[[str], None]) -> ScannedModel:
        if self.kind == "gguf":
            model = _read_gguf_parts([f for f in self.files if f != self.projector], self.missing, on_file)
            if self.projector is None:
                return model
            header = _parse_gguf(self.projector)
            on_file(self.projector)
            return _with_projector(model, header, self.notes)
        if self.missing:
            raise _fail(self.missing[0], ImportErrorKind.NOT_FOUND,
                        f"{len(self.missing)} of {len(self.files) + len(self.missing)} weight files are missing"
                        + (f" (listed in {os.path.basename(self.index)})" if self.index else ""))
        config, config_note = _read_config(self.folder)
        notes = list(self.notes) + ([config_note] if config_note else [])
        if self.kind == "safetensors":
            headers = []
            for file in self.files:
                headers.append(_parse_safetensors(file))
                on_file(file)
            return _safetensors_model(self.path, self.name(), headers, config, notes, self.index_total)
        sizes = []
        for file in self.files:
            sizes.append(_stat_size(file))
            on_file(file)
        notes.insert(0, f"{UNVERIFIED_PICKLE}: file not opened, size only (loading a pickle can run code; "
                        "convert to safetensors for exact figures)")
        return ScannedModel(
            path=self.path, name=self.name(), format="pytorch-pickle", files=tuple(self.files),
            file_bytes=sum(sizes), weight_bytes=sum(sizes), exact=False, parameters=None, bytes_by_type=(),
            file_type=None, architecture=_config_architecture(config, (), notes), notes=tuple(notes),
        )


def _present(folder: str, names: Iterable[str], here: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Full paths of the named files split into (present, missing); `here` is the folder listing if known."""
    present: list[str] = []
    missing: list[str] = []
    for name in names:
        full = os.path.join(folder, name)
        found = name in here if here is not None and os.sep not in name else os.path.isfile(full)
        (present if found else missing).append(full)
    return present, missing


def _weight_groups(folder: str, names: list[str], kind: str, suffixes: tuple[str, ...], index_suffix: str,
                   errors: list[ModelImportError]) -> list[_Group]:
    """Index-listed shards form one group, `-0000k-of-0000n` shards another, every other file its own."""
    here = set(names)
    weights = [n for n in names if n.lower().endswith(suffixes)]
    groups: list[_Group] = []
    claimed: set[str] = set()
    for index in (n for n in names if n.endswith(index_suffix)):
        index_path = os.path.join(folder, index)
        try:
            shards, total = _read_index(index_path)
        except ModelImportError as exc:
            errors.append(exc)
            continue
        groups.append(_Group(kind, folder, *_present(folder, shards, here), index=index_path, index_total=total))
        claimed.update(shards)
    shards_by_stem: dict[tuple[str, str], list[str]] = {}
    for name in weights:
        if name in claimed:
            continue
        match = _ST_SHARD.match(name)
        if match and 1 <= int(match["no"]) <= int(match["count"]) <= 10_000:
            shards_by_stem.setdefault((match["stem"], match["count"]), []).append(name)
        else:
            groups.append(_Group(kind, folder, [os.path.join(folder, name)]))
    for (stem, count), present in shards_by_stem.items():
        ext = present[0].rsplit(".", 1)[1]
        expected = [f"{stem}-{i:05d}-of-{count}.{ext}" for i in range(1, int(count) + 1)]
        groups.append(_Group(kind, folder, *_present(folder, expected, here)))
    return groups


def _folder_groups(folder: str, names: Iterable[str], errors: list[ModelImportError], *,
                   model_folder: bool = False) -> list[_Group]:
    """Every model in one folder (not its subfolders), each as the files it is made of.

    Pickles (.bin/.pt/.pth/.ckpt) count only where the folder looks like a model's (``model_folder``:
    a Hugging Face snapshot; or a config.json beside them) or the file starts as torch.save writes;
    any other is skipped with a NOT_A_MODEL error (a valgrind ``.bin``, a firmware blob, vim's tutor.pt).
    """
    names = sorted(names)
    here = set(names)
    groups: list[_Group] = []
    split_seen: set[tuple[str, str]] = set()
    for name in names:
        if not name.lower().endswith(".gguf"):
            continue
        match = _GGUF_SPLIT.match(name)
        if match and 1 <= int(match["no"]) <= int(match["count"]) <= 10_000:
            key = (match["stem"], match["count"])
            if key in split_seen:
                continue
            split_seen.add(key)
            expected = [f"{match['stem']}-{i:05d}-of-{match['count']}.gguf" for i in range(1, int(match["count"]) + 1)]
            groups.append(_Group("gguf", folder, *_present(folder, expected, here)))
        else:
            groups.append(_Group("gguf", folder, [os.path.join(folder, name)]))
    groups = _attach_projectors(groups)
    tensors = _weight_groups(folder, names, "safetensors", (".safetensors",), ".safetensors.index.json", errors)
    pickle_names = [n for n in names if n not in _NOT_WEIGHTS and not n.startswith("rng_state")]
    pickles = _weight_groups(folder, pickle_names, "pytorch-pickle", PICKLE_SUFFIXES, ".bin.index.json", errors)
    if not (model_folder or "config.json" in here):
        pickles = _model_pickles(pickles, errors)
    if tensors and "config.json" in here:
        # A Hugging Face folder often ships the same weights twice; transformers loads the safetensors.
        duplicates = [g for g in pickles if os.path.basename((g.files or g.missing)[0]).startswith("pytorch_model")]
        if duplicates:
            tensors[0].notes.append("pytorch_model*.bin not counted: the safetensors files hold the same weights")
            pickles = [g for g in pickles if g not in duplicates]
    groups += tensors + pickles
    per_kind = {kind: sum(1 for g in groups if g.kind == kind) for kind in {g.kind for g in groups}}
    for group in groups:
        multi = group.index is not None or len(group.files) + len(group.missing) > 1
        if multi and per_kind[group.kind] == 1 and group.kind != "gguf":  # llama.cpp takes a split GGUF's first part
            group.path = folder
        else:
            group.path = group.index or (group.files or group.missing)[0]
    return groups


def _is_projector(group: _Group) -> bool:
    return len(group.files) == 1 and not group.missing and "mmproj" in os.path.basename(group.files[0]).lower()


def _attach_projectors(groups: list[_Group]) -> list[_Group]:
    """A folder's ``mmproj-*.gguf`` is the vision projector of the GGUF models beside it (llama.cpp's
    ``--mmproj``): each of them is read with it. A projector alone in its folder stays a model of its own."""
    projectors = [g for g in groups if _is_projector(g)]
    models = [g for g in groups if g not in projectors]
    if not projectors or not models:
        return groups
    chosen, *others = projectors
    for group in models:
        group.projector = chosen.files[0]
        group.files.append(chosen.files[0])
        if others:
            group.notes.append(f"{', '.join(os.path.basename(g.files[0]) for g in others)} not counted: llama.cpp "
                               f"loads one projector, {os.path.basename(chosen.files[0])} was read")
    return models


def _with_projector(model: ScannedModel, header: _GGUFHeader, notes: list[str]) -> ScannedModel:
    """The model with its vision projector: its tensors in every total, its parameters as ``vision_encoder``."""
    _, names, _ = _ggml_tables()
    by_type = dict(model.bytes_by_type)
    for tensor in header.tensors:
        by_type[names[tensor.type_id]] = by_type.get(names[tensor.type_id], 0) + tensor.n_bytes
    parameters = sum(t.n_elements for t in header.tensors)
    n_bytes = sum(t.n_bytes for t in header.tensors)
    architecture = dict(model.architecture)
    if parameters:
        architecture["components"] = {"vision_encoder": parameters}
    note = (f"vision projector {os.path.basename(header.path)}: {parameters:,} parameters, {n_bytes:,} bytes, "
            "counted in the totals")
    return replace(model, files=(*model.files, header.path), file_bytes=model.file_bytes + header.size,
                   weight_bytes=model.weight_bytes + n_bytes, parameters=(model.parameters or 0) + parameters,
                   bytes_by_type=_sorted_types(by_type), architecture=architecture,
                   notes=(*model.notes, note, *notes))


def _model_pickles(groups: list[_Group], errors: list[ModelImportError]) -> list[_Group]:
    """The pickle groups of a folder without config.json that are torch checkpoints; the rest are skipped."""
    kept: list[_Group] = []
    for group in groups:
        first = (group.files or group.missing)[0]
        if group.index is not None or (group.files and all(_torch_checkpoint(f) for f in group.files)):
            kept.append(group)
            continue
        for file in group.files:
            errors.append(_fail(file, ImportErrorKind.NOT_A_MODEL,
                                "not a model: no config.json beside it, and it does not start as a PyTorch "
                                "checkpoint"))
        if not group.files:
            errors.append(_fail(first, ImportErrorKind.NOT_FOUND, "not found"))
    return kept


def read_safetensors(path: str | os.PathLike[str]) -> ScannedModel:
    """Exact weight bytes, parameters and dtypes of a safetensors model, from its headers.

    `path` is one file (read alone, even if it is a shard), a `*.safetensors.index.json` (all its
    shards), or a folder holding one model (its index, its shards or its single file).
    config.json beside the weights supplies the architecture.
    """
    full = os.path.abspath(os.fspath(path))
    try:
        return _read_safetensors(full)
    except ModelImportError:
        raise
    except Exception as exc:
        raise _unexpected(full, exc) from None


def _read_safetensors(full: str) -> ScannedModel:
    _refuse_pickle(full)
    if os.path.isdir(full):
        try:
            names = os.listdir(full)
        except OSError as exc:
            raise _os_error(full, exc) from None
        errors: list[ModelImportError] = []
        groups = [g for g in _folder_groups(full, names, errors) if g.kind == "safetensors"]
        indexed = [g for g in groups if g.index is not None]
        if len(indexed) == 1:
            groups = indexed
        if len(groups) != 1:
            if errors:
                raise errors[0]
            what = "no safetensors files" if not groups else f"{len(groups)} separate safetensors models"
            raise _fail(full, ImportErrorKind.NOT_FOUND if not groups else ImportErrorKind.UNSUPPORTED,
                        f"the folder holds {what}", "Pass one file or index, or scan the folder with scan_path.")
        return groups[0].read(lambda _: None)
    folder = os.path.dirname(full)
    if full.endswith(".json"):
        shards, total = _read_index(full)
        group = _Group("safetensors", folder, *_present(folder, shards), index=full, index_total=total, path=folder)
        return group.read(lambda _: None)
    _stat_size(full)
    group = _Group("safetensors", folder, [full], path=full)
    match = _ST_SHARD.match(os.path.basename(full))
    if match:
        group.notes.append(f"shard {int(match['no'])} of {int(match['count'])}: read the folder or its index "
                           "for the whole model")
    return group.read(lambda _: None)


# ---------------------------------------------------------------------------------- diffusers pipelines


def _pipeline_index(folder: str, errors: list[ModelImportError]) -> tuple[str | None, list[str]]:
    """The pipeline class a diffusers ``model_index.json`` names, and the part folders it lists."""
    path = os.path.join(folder, "model_index.json")
    try:
        index = _read_json(path, "model_index.json")
    except ModelImportError as exc:
        errors.append(exc)
        return None, []
    if not isinstance(index, dict):
        errors.append(_fail(path, ImportErrorKind.MALFORMED, "is not a JSON object",
                            "Download the pipeline's model_index.json again."))
        return None, []
    parts = sorted(name for name, value in index.items()
                   if isinstance(name, str) and not name.startswith("_") and name not in (".", "..")
                   and name == os.path.basename(name) and isinstance(value, list) and len(value) == 2
                   and all(isinstance(v, str) for v in value))
    class_name = index.get("_class_name")
    return (class_name if isinstance(class_name, str) and class_name else None), parts


def _variant(group: _Group) -> bool:
    """True for a weights variant (``diffusion_pytorch_model.fp16.safetensors``) rather than the main file."""
    return group.index is None and os.path.basename((group.files or group.missing)[0]).count(".") > 1


def _part_group(folder: str, names: Iterable[str], errors: list[ModelImportError]) -> tuple[_Group | None, list[str]]:
    """The weights of one pipeline part (safetensors before pickles, the main file before its fp16/bf16
    variants: one copy, as diffusers loads), and the files left out."""
    groups = [g for g in _folder_groups(folder, names, errors, model_folder=True) if g.kind != "gguf"]
    if not groups:
        return None, []
    ranked = sorted(groups, key=lambda g: (g.kind != "safetensors", g.index is None, _variant(g),
                                           (g.files or g.missing)[0]))
    return ranked[0], [os.path.basename((g.files or g.missing)[0]) for g in ranked[1:]]


def _pipeline_job(root: str, name: str, listing: dict[str, list[str]] | None, errors: list[ModelImportError], *,
                  notes: Sequence[str] = (), huggingface_id: str | None = None) -> _Job | None:
    """One job for a diffusers pipeline: every part its ``model_index.json`` lists that holds weights, read
    as one model with each part's parameters in ``components``. None when no listed part holds weights.
    ``listing``: the files of each folder where known (a Hugging Face snapshot), else the disk is listed."""
    class_name, names = _pipeline_index(root, errors)
    parts: list[tuple[str, _Group]] = []
    left_out: list[str] = []
    for part in names:
        folder = os.path.join(root, part)
        if listing is not None:
            files = listing.get(folder)
            if files is None:
                continue
        else:
            if not os.path.isdir(folder):
                continue
            try:
                files = os.listdir(folder)
            except OSError as exc:
                errors.append(_os_error(folder, exc))
                continue
        group, skipped = _part_group(folder, files, errors)
        if group is not None:
            parts.append((part, group))
            left_out += [f"{part}/{file}" for file in skipped]
    if not parts:
        return None
    extra = list(notes) + ([f"not counted (another copy of a part): {', '.join(left_out)}"] if left_out else [])

    def run(on_file: Callable[[str], None]) -> ScannedModel:
        models = [(part, group.read(on_file)) for part, group in parts]
        return _pipeline_model(root, name, class_name, models, extra, huggingface_id)

    return _Job(root, [f for _, group in parts for f in group.files], run)


def _pipeline_model(root: str, name: str, class_name: str | None, models: list[tuple[str, ScannedModel]],
                    notes: list[str], huggingface_id: str | None) -> ScannedModel:
    by_type: dict[str, int] = {}
    for _, model in models:
        for type_name, n in model.bytes_by_type:
            by_type[type_name] = by_type.get(type_name, 0) + n
    components = {part: model.parameters for part, model in models if model.parameters is not None}
    unread = [part for part, model in models if model.parameters is None]
    architecture = _empty_architecture()
    architecture["family"] = class_name
    architecture["components"] = components or None
    exact = all(model.exact for _, model in models)
    bytes_by_type = _sorted_types(by_type)
    all_notes = [f"diffusers pipeline {class_name or '(no _class_name)'}: {', '.join(part for part, _ in models)}",
                 *notes]
    if unread:
        all_notes.append(f"{', '.join(unread)}: pickle weights, sized by file only (no parameter count)")
    for part, model in models:
        all_notes += [f"{part}: {note}" for note in model.notes]
    return ScannedModel(
        path=root,
        name=name,
        format="hf-cache" if huggingface_id else "diffusers",
        files=tuple(f for _, model in models for f in model.files),
        file_bytes=sum(model.file_bytes for _, model in models),
        weight_bytes=sum(model.weight_bytes for _, model in models),
        exact=exact,
        parameters=sum(components.values()) if components and not unread else None,
        bytes_by_type=bytes_by_type,
        file_type=bytes_by_type[0][0] if bytes_by_type and exact else None,
        architecture=architecture,
        huggingface_id=huggingface_id,
        notes=tuple(all_notes),
    )


# ----------------------------------------------------------------------------------- Hugging Face


@dataclass(slots=True)
class _Job:
    """One model to read: the files it touches (for progress) and how to read them."""

    path: str
    files: list[str]
    run: Callable[[Callable[[str], None]], ScannedModel]


def _merge_revision(models: list[ScannedModel], snapshot: str, repo_id: str, config: dict[str, Any] | None,
                    notes: list[str]) -> ScannedModel:
    by_type: dict[str, int] = {}
    for model in models:
        for type_name, n in model.bytes_by_type:
            by_type[type_name] = by_type.get(type_name, 0) + n
    bytes_by_type = _sorted_types(by_type)
    exact = all(m.exact for m in models)
    formats = sorted({m.format for m in models})
    # The architecture is the model at the snapshot root; a diffusers pipeline has none there.
    root = [m for m in models if os.path.dirname(m.files[0]) == snapshot]
    if root:
        architecture = dict(root[0].architecture)
    else:
        architecture = _config_architecture(config, (), notes) if config is not None else _empty_architecture()
    merged_notes = [f"weights: {', '.join(formats)}"] + notes
    for model in models:
        merged_notes += [n for n in model.notes if n not in merged_notes]
    counts = [m.parameters for m in models if m.parameters is not None]  # all known, or no total
    return ScannedModel(
        path=snapshot,
        name=repo_id,
        format="hf-cache",
        files=tuple(f for m in models for f in m.files),
        file_bytes=sum(m.file_bytes for m in models),
        weight_bytes=sum(m.weight_bytes for m in models),
        exact=exact,
        parameters=sum(counts) if len(counts) == len(models) else None,
        bytes_by_type=bytes_by_type,
        file_type=bytes_by_type[0][0] if bytes_by_type and exact else None,
        architecture=architecture,
        huggingface_id=repo_id,
        notes=tuple(merged_notes),
    )


def _revision_jobs(repo_id: str, revision: Any, errors: list[ModelImportError]) -> list[_Job]:
    snapshot = os.fspath(revision.snapshot_path)
    by_folder: dict[str, list[str]] = {}
    for cached in revision.files:
        by_folder.setdefault(os.fspath(cached.file_path.parent), []).append(cached.file_name)
    groups: list[_Group] = []
    for folder in sorted(by_folder):
        found = _folder_groups(folder, by_folder[folder], errors, model_folder=True)
        if any(g.kind == "safetensors" and g.index for g in found):  # e.g. Mistral's consolidated.safetensors
            extra = [g for g in found if g.kind == "safetensors" and not g.index]
            for g in extra:
                found.remove(g)
            if extra:
                kept = next(g for g in found if g.kind == "safetensors")
                kept.notes.append(f"{', '.join(os.path.basename(g.files[0]) for g in extra)} not counted: "
                                  "the shard index covers the same model")
        groups += found
    refs = ", ".join(sorted(revision.refs))
    label = f"revision {revision.commit_hash[:12]}" + (f" (refs: {refs})" if refs else "")
    jobs: list[_Job] = []
    if "model_index.json" in by_folder.get(snapshot, ()):
        pipeline = _pipeline_job(snapshot, repo_id, {f: n for f, n in by_folder.items() if f != snapshot}, errors,
                                 notes=[label], huggingface_id=repo_id)
        if pipeline is not None:  # the pipeline is the revision's model: other non-GGUF weights are left out
            jobs.append(pipeline)
            groups = [g for g in groups if g.kind == "gguf"]
    for group in (g for g in groups if g.kind == "gguf"):
        def run_gguf(on_file: Callable[[str], None], group: _Group = group) -> ScannedModel:
            model = group.read(on_file)
            return replace(model, format="hf-cache", huggingface_id=repo_id,
                           notes=("weights: gguf", label) + model.notes)
        jobs.append(_Job(group.path, list(group.files), run_gguf))
    rest = [g for g in groups if g.kind != "gguf"]
    if any(g.kind == "safetensors" for g in rest):
        dropped = [g for g in rest if g.kind == "pytorch-pickle"]
        rest = [g for g in rest if g.kind == "safetensors"]
        if dropped:
            rest[0].notes.append("pickle weights not counted: the safetensors files hold the model")
    if rest:
        def run_rest(on_file: Callable[[str], None], rest: list[_Group] = rest) -> ScannedModel:
            models = [g.read(on_file) for g in rest]
            config, _ = _read_config(snapshot)
            return _merge_revision(models, snapshot, repo_id, config, [label])
        jobs.append(_Job(snapshot, [f for g in rest for f in g.files], run_rest))
    return jobs


def _hf_cache_jobs(cache_dir: str | None, only_repo: str | None, errors: list[ModelImportError],
                   missing_ok: bool = False) -> list[_Job]:
    """Jobs for every model revision in a Hugging Face hub cache, found by `scan_cache_dir`."""
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound
    except ImportError:
        errors.append(_fail(cache_dir or "huggingface cache", ImportErrorKind.UNSUPPORTED,
                            "reading a Hugging Face cache needs huggingface_hub",
                            "Install it: pip install huggingface_hub."))
        return []
    where = cache_dir or "default Hugging Face cache"
    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound as exc:
        if missing_ok:
            return []
        errors.append(_fail(os.fspath(getattr(exc, "cache_dir", where)), ImportErrorKind.NOT_FOUND,
                            "no Hugging Face cache there"))
        return []
    except OSError as exc:
        errors.append(_os_error(where, exc))
        return []
    except Exception as exc:
        errors.append(_fail(where, ImportErrorKind.MALFORMED, f"not a readable Hugging Face cache ({exc})"))
        return []
    for warning in info.warnings:
        text = str(warning)
        if only_repo is None or only_repo in text:
            errors.append(_fail(os.fspath(info.cache_dir or where), ImportErrorKind.MALFORMED,
                                f"a cached repo is damaged ({text})",
                                "Delete that repo from the cache (`hf cache rm`) and download it again."))
    jobs: list[_Job] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or (only_repo is not None and repo.repo_path.name != only_repo):
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            jobs += _revision_jobs(repo.repo_id, revision, errors)
    return jobs


def _run_jobs(jobs: list[_Job], errors: list[ModelImportError],
              progress: ProgressCallback | None) -> list[ScannedModel]:
    """Read every job; a failed job becomes an error and the scan goes on. progress may raise to cancel."""
    total = sum(len(job.files) for job in jobs)
    done = 0
    models: list[ScannedModel] = []
    cancel: list[BaseException] = []  # what progress raised: it ends the scan, it is not a file's error
    for job in jobs:
        reported: list[str] = []

        def on_file(file: str) -> None:
            nonlocal done
            done += 1
            reported.append(file)  # noqa: B023 - called only during this job's iteration
            if progress is not None:
                try:
                    progress(done, total, file)
                except BaseException as exc:
                    cancel.append(exc)
                    raise

        try:
            models.append(job.run(on_file))
        except ModelImportError as exc:
            if cancel and exc is cancel[0]:
                raise
            errors.append(exc)
        except Exception as exc:  # untrusted files: one bad file never ends the scan with a traceback
            if cancel and exc is cancel[0]:
                raise
            errors.append(_unexpected(job.path, exc))
        for file in job.files[len(reported):]:
            on_file(file)
    return models


def scan_hf_cache(cache_dir: str | os.PathLike[str] | None = None, *,
                  errors: list[ModelImportError] | None = None) -> list[ScannedModel]:
    """One entry per model revision with weights in a Hugging Face hub cache (default: HF_HUB_CACHE).

    Several GGUF models in one revision are separate entries; the other weights of a revision
    (safetensors components, or pickles when no safetensors exist) add up to one. With `errors`
    given, problems are collected there; without it, the first one is raised. A missing default
    cache is not an error: the list is just empty.
    """
    collected: list[ModelImportError] = []
    folder = os.path.abspath(os.fspath(cache_dir)) if cache_dir is not None else None
    jobs = _hf_cache_jobs(folder, None, collected, missing_ok=folder is None)
    models = _run_jobs(jobs, collected, None)
    if errors is not None:
        errors.extend(collected)
    elif collected:
        raise collected[0]
    return models


# ------------------------------------------------------------------------------ one model's facts


@dataclass(frozen=True, slots=True)
class ArchitectureFile:
    """What a model's own file says of its architecture: the fields, the parameter count where the
    file holds the weights (a GGUF or safetensors header), and the file read."""

    path: str
    architecture: dict[str, ArchValue]
    parameters: int | None
    notes: tuple[str, ...] = ()


def read_architecture(path: str | os.PathLike[str]) -> ArchitectureFile:
    """The architecture a GGUF header, a Hugging Face config.json (or the folder holding it) or a
    safetensors file (with config.json beside it) states, through the same readers a scan uses.
    Raises :class:`ModelImportError` (what is wrong and what to do) for anything else."""
    full = os.path.abspath(os.fspath(path))
    if os.path.isdir(full) and os.path.isfile(os.path.join(full, "config.json")):
        full = os.path.join(full, "config.json")
    if full.lower().endswith(".gguf"):
        model = read_gguf(full)
        arch, params, notes = model.architecture, model.parameters, list(model.notes)
    elif full.lower().endswith((".safetensors", ".safetensors.index.json")) or os.path.isdir(full):
        model = read_safetensors(full)
        arch, params, notes = model.architecture, model.parameters, list(model.notes)
    elif os.path.basename(full) == "config.json":
        _stat_size(full)
        config = _read_json(full, "config.json")
        if not isinstance(config, dict):
            raise _fail(full, ImportErrorKind.MALFORMED, "is not a JSON object",
                        "Pick the model's Hugging Face config.json.")
        notes = []
        arch, params = _config_architecture(config, (), notes, refuse_at=full), None
    else:
        _refuse_pickle(full)
        raise _fail(full, ImportErrorKind.UNSUPPORTED, "is not a GGUF file, a safetensors file or a config.json",
                    "Pick the model's .gguf file, or the config.json of its Hugging Face folder.")
    if not arch.get("layers"):
        unused = next((n for n in notes if n.startswith(_CONFIG_UNUSED)), None)
        if unused is not None:  # the config beside the weights was refused: that is the reason, not the layers
            raise ModelImportError(full, ImportErrorKind.MALFORMED,
                                   unused if unused.endswith(".") else f"{unused}. {_CONFIG_ADVICE}")
        raise _fail(full, ImportErrorKind.MALFORMED, "does not state the number of layers",
                    "Pick the language model's own config.json or GGUF file.")
    return ArchitectureFile(full, dict(arch), params, tuple(notes))


# ----------------------------------------------------------------------------------------- scanning


def _is_hf_repo(folder: str) -> bool:
    return os.path.basename(folder).startswith("models--") and os.path.isdir(os.path.join(folder, "snapshots"))


def _tree_jobs(root: str, errors: list[ModelImportError]) -> list[_Job]:
    jobs: list[_Job] = []

    def group_jobs(groups: list[_Group]) -> None:
        jobs.extend(_Job(g.path, list(g.files), g.read) for g in groups)

    if _is_hf_repo(root):
        return _hf_cache_jobs(os.path.dirname(root), os.path.basename(root), errors)
    for folder, dirnames, filenames in os.walk(root, onerror=lambda exc: errors.append(_os_error(root, exc))):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        if any(_is_hf_repo(os.path.join(folder, d)) for d in dirnames):
            jobs.extend(_hf_cache_jobs(folder, None, errors))
            dirnames[:] = [d for d in dirnames if not d.startswith(("models--", "datasets--", "spaces--"))]
        if "model_index.json" in filenames:  # a diffusers pipeline: its part folders are read as one model
            pipeline = _pipeline_job(folder, os.path.basename(folder), None, errors)
            if pipeline is not None:
                jobs.append(pipeline)
                read = {os.path.relpath(os.path.dirname(f), folder) for f in pipeline.files}
                dirnames[:] = [d for d in dirnames if d not in read]
        group_jobs(_folder_groups(folder, filenames, errors))
    return jobs


def scan_path(path: str | os.PathLike[str],
              progress: ProgressCallback | None = None) -> tuple[list[ScannedModel], list[ModelImportError]]:
    """Every model under a file or folder (recursive), and every file that could not be read.

    GGUF (split parts counted once), safetensors (an index or shard set counted once, config.json
    beside it read), pickles (.bin/.pt/.pth/.ckpt: registered by size, never unpickled, labelled
    "unverified (pickle: not read)"; only beside a config.json, in a Hugging Face snapshot, when the
    file starts as torch.save writes, or when asked for by name: others are NOT_A_MODEL errors) and Hugging Face
    hub caches. Errors are collected so one bad file does not stop a scan; `progress(done, total,
    file)` is called once per file, and may raise to cancel the scan.
    """
    full = os.path.abspath(os.fspath(path))
    errors: list[ModelImportError] = []
    try:
        is_dir = os.path.isdir(full)
        os.stat(full)
    except OSError as exc:
        return [], [_os_error(full, exc)]
    if is_dir:
        jobs = _tree_jobs(full, errors)
    else:
        folder, name = os.path.split(full)
        try:
            names = os.listdir(folder)
        except OSError as exc:
            return [], [_os_error(folder, exc)]
        found = _folder_groups(folder, names, errors)
        groups = [g for g in found if full in g.files and full != g.projector]
        if not groups and any(full == g.projector for g in found):  # a projector asked for by name: read alone
            groups = [_Group("gguf", folder, [full], path=full)]
        errors = [e for e in errors if e.path == full]
        if not groups and name.lower().endswith(PICKLE_SUFFIXES):  # asked for by name: register it (unverified)
            errors = [e for e in errors if e.kind != ImportErrorKind.NOT_A_MODEL]
            groups = [_Group("pytorch-pickle", folder, [full], path=full)]
        if not groups:
            errors.append(_fail(full, ImportErrorKind.UNSUPPORTED, "not a model file ModelDeck knows",
                                "ModelDeck reads .gguf, .safetensors, and registers .bin/.pt/.pth/.ckpt by size."))
        jobs = [_Job(g.path, list(g.files), g.read) for g in groups]
    models = _run_jobs(jobs, errors, progress)
    return models, errors
