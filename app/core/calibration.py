"""Calibration: what a runtime really allocated for a model, next to what ModelDeck predicted.

Each time a runtime (llama.cpp) loads a model it can record a :class:`Calibration`: the estimate's
figures (``predicted``) and the runtime's own (``measured``), per category, for one model, level,
context and device. :class:`CalibrationStore` keeps them in ``calibration.json`` in the user data
directory, shared by every ModelDeck process. From them come

* the figures measured for that exact model, level, context and device (:func:`latest_measurement`),
* a learned correction per estimate term: the median of measured / predicted over recent loads,
  clamped to [0.5, 2.0] (:func:`learn_corrections`),
* a calibrated estimate: measured where that load was seen, corrected where at least
  ``MIN_LOADS`` loads support a term, else unchanged (:func:`calibrate`).

Categories and the estimate's terms (``MemoryEstimate``): ``weights`` → weights, ``kv_cache`` →
KV cache, ``output`` + ``compute`` (llama.cpp's logits buffer and compute buffers) → compute,
``runtime`` → overhead. Any category may be missing; a term is known when one of its categories is.

File format (``version`` 1; entries oldest first, the newest recorded last; one entry a line)::

    {"version": 1,
     "entries": [
      {"model_id": "llama-3.1-8b-instruct", "level": "Q4_K_M", "context": 8192, "device": "cuda:0",
       "runtime": "llama.cpp", "timestamp": 1767225600.0,
       "predicted": {"weights": 4920000000, "kv_cache": 1073741824, "compute": 560000000, "runtime": 479199232},
       "measured": {"weights": 4912345088, "kv_cache": 1073741824, "output": 2101248, "compute": 520093696}}]}

Writes are atomic (a temp file in the same folder, fsynced, renamed over the old one) and made
under a file lock (``.calibration.json.lock``), so two processes never lose each other's entries.
The file stays small: the newest ``MAX_ENTRIES`` entries, at most ``MAX_PER_KEY`` per (model,
level, context, device). A file that is not a calibration file (bad JSON, wrong shape, an invalid
entry, over ``MAX_FILE_BYTES``, not a regular file, unreadable) is moved aside to
``calibration.json.bad-<time>`` with one warning line, never overwritten; its valid entries are kept.
Reading never raises; recording or clearing raises :class:`CalibrationError`, one line naming the
file and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import statistics
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core.estimation import MAX_TOKENS, EstimateTerm, MemoryEstimate
from app.core.storage import FileLock, atomic_write
from app.core.units import MiB, format_gib

__all__ = [
    "CATEGORIES",
    "MAX_ENTRIES",
    "MAX_PER_KEY",
    "MIN_LOADS",
    "TERMS",
    "Calibration",
    "CalibrationError",
    "CalibrationStore",
    "Correction",
    "bounded",
    "calibrate",
    "default_calibration_path",
    "latest_measurement",
    "learn_corrections",
    "predicted_from",
    "term_bytes",
]

_log = logging.getLogger(__name__)

FILE_VERSION = 1
RUNTIME = "llama.cpp"
#: What a runtime reports, per model and device.
CATEGORIES = ("weights", "kv_cache", "output", "compute", "runtime")
#: The estimate's terms and the categories each is measured by.
TERMS: dict[str, tuple[str, ...]] = {
    "weights": ("weights",),
    "kv_cache": ("kv_cache",),
    "compute": ("output", "compute"),
    "overhead": ("runtime",),
}
MAX_ENTRIES = 500
MAX_PER_KEY = 20
#: A correction needs this many loads behind it; it is learned from at most RECENT_LOADS of the newest.
MIN_LOADS = 3
RECENT_LOADS = 100
CLAMP = (0.5, 2.0)
#: 500 entries take about 250 KB; a larger file was not written by ModelDeck and is not read.
MAX_FILE_BYTES = 4 * MiB
MAX_FILE_ENTRIES = 4 * MAX_ENTRIES
#: One figure: 1 PiB, far above any device.
MAX_FIGURE_BYTES = 1 << 50
MAX_ID_CHARS = 300
MAX_NAME_CHARS = 64
#: 2100-01-01 UTC.
MAX_TIMESTAMP = 4_102_444_800.0
LOCK_TIMEOUT_S = 10.0
TEMP_STALE_AFTER_S = 5.0

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FIELDS = ("model_id", "level", "context", "device", "runtime", "timestamp", "predicted", "measured")


class CalibrationError(Exception):
    """Calibration data that cannot be used or saved; the message is one line that says what to do."""


def default_calibration_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("modeldeck", appauthor=False)) / "calibration.json"


# ------------------------------------------------------------------------------------------------
# Entries
# ------------------------------------------------------------------------------------------------


def _brief(value: Any) -> str:
    """A short printable form of any value read from a file (huge ints cannot be printed whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length():,}-bit number"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = _UNPRINTABLE.sub("?", repr(value))
    return text if len(text) <= 40 else text[:39] + "…"


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit or _UNPRINTABLE.search(value):
        raise CalibrationError(f"{name}: {_brief(value)} is not a name of 1 to {limit} printable characters")
    return value


def _count(name: str, value: Any, limit: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise CalibrationError(f"{name}: {_brief(value)} is not {what} from 0 to {limit:,}")
    return int(value)


def _figures(name: str, value: Any, *, required: bool) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise CalibrationError(f"{name}: {_brief(value)} is not an object of bytes per category")
    unknown = [k for k in value if k not in CATEGORIES]
    if unknown:
        raise CalibrationError(f"{name}: unknown category {_brief(unknown[0])} (known: {', '.join(CATEGORIES)})")
    if required and not value:
        raise CalibrationError(f"{name}: no figures; give at least one of {', '.join(CATEGORIES)}")
    return {k: _count(f"{name}.{k}", value[k], MAX_FIGURE_BYTES, "a number of bytes") for k in CATEGORIES if k in value}


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """One load: what was predicted and what the runtime measured, in bytes per category
    (``CATEGORIES``; missing ones are unknown). Checked when made: a bad value is a CalibrationError."""

    model_id: str
    level: str
    context: int
    device: str
    runtime: str = RUNTIME
    predicted: dict[str, int]
    measured: dict[str, int]
    #: Unix time of the load.
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        _text("model_id", self.model_id, MAX_ID_CHARS)
        _text("level", self.level, MAX_NAME_CHARS)
        _count("context", self.context, MAX_TOKENS, "a context in tokens")
        _text("device", self.device, MAX_NAME_CHARS)
        _text("runtime", self.runtime, MAX_NAME_CHARS)
        ts = self.timestamp
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 <= ts <= MAX_TIMESTAMP:
            raise CalibrationError(f"timestamp: {_brief(ts)} is not a time in seconds from 0 to {MAX_TIMESTAMP:.0f}")
        object.__setattr__(self, "context", int(self.context))
        object.__setattr__(self, "timestamp", float(ts))
        object.__setattr__(self, "predicted", _figures("predicted", self.predicted, required=False))
        object.__setattr__(self, "measured", _figures("measured", self.measured, required=True))

    @property
    def key(self) -> tuple[str, str, int, str]:
        """What the bounds count by: model, level (case ignored), context, device."""
        return self.model_id, self.level.casefold(), self.context, self.device

    @property
    def date(self) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(self.timestamp))

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "level": self.level, "context": self.context, "device": self.device,
                "runtime": self.runtime, "timestamp": self.timestamp, "predicted": dict(self.predicted),
                "measured": dict(self.measured)}

    @classmethod
    def from_json(cls, data: Any) -> Calibration:
        """An entry as read from the file; anything else is a CalibrationError naming the field."""
        if not isinstance(data, dict):
            raise CalibrationError(f"{_brief(data)} is not an entry (a JSON object)")
        unknown = [k for k in data if k not in _FIELDS]
        if unknown:
            raise CalibrationError(f"unknown field {_brief(unknown[0])}")
        missing = [k for k in _FIELDS if k not in data]
        if missing:
            raise CalibrationError(f"{missing[0]}: missing")
        return cls(**data)


def predicted_from(estimate: MemoryEstimate) -> dict[str, int]:
    """An estimate's figures by category, for ``Calibration.predicted``."""
    return {"weights": estimate.weights.bytes, "kv_cache": estimate.kv_cache.bytes,
            "compute": estimate.compute.bytes, "runtime": estimate.overhead.bytes}


def term_bytes(figures: Mapping[str, int], term: str) -> int | None:
    """The bytes of one estimate term (``TERMS``) in these figures; None when none of its categories is there."""
    parts = [figures[c] for c in TERMS[term] if c in figures]
    return sum(parts) if parts else None


# ------------------------------------------------------------------------------------------------
# What the entries teach (pure functions)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Correction:
    """A learned factor for one term: the median of measured / predicted, clamped to ``CLAMP``."""

    term: str
    factor: float
    #: The median before clamping.
    median: float
    loads: int

    @property
    def usable(self) -> bool:
        return self.loads >= MIN_LOADS


def _matches(e: Calibration, model_id: str, level: str, context: int, device: str | None, runtime: str) -> bool:
    return (e.model_id == model_id and e.level.casefold() == level.casefold() and e.context == context
            and (device is None or e.device == device) and e.runtime == runtime)


def latest_measurement(entries: Iterable[Calibration], model_id: str, level: str, context: int,
                       device: str | None = None, *, runtime: str = RUNTIME) -> Calibration | None:
    """The newest entry for exactly this model, level (case ignored), context and device (any when None)."""
    found = None
    for e in entries:
        if _matches(e, model_id, level, context, device, runtime):
            found = e
    return found


def learn_corrections(entries: Iterable[Calibration], *, runtime: str | None = RUNTIME,
                      recent: int = RECENT_LOADS) -> dict[str, Correction]:
    """Per term, measured / predicted over the newest ``recent`` loads that have both (zero predictions
    ignored); terms no load measured are absent. ``runtime=None``: every runtime's loads."""
    ordered = [e for e in entries if runtime is None or e.runtime == runtime]
    out: dict[str, Correction] = {}
    for term in TERMS:
        ratios: list[float] = []
        for e in reversed(ordered):
            predicted, measured = term_bytes(e.predicted, term), term_bytes(e.measured, term)
            if predicted and measured is not None:
                ratios.append(measured / predicted)
                if len(ratios) >= recent:
                    break
        if ratios:
            median = statistics.median(ratios)
            out[term] = Correction(term, min(max(median, CLAMP[0]), CLAMP[1]), median, len(ratios))
    return out


def calibrate(entries: Iterable[Calibration], estimate: MemoryEstimate, model_id: str, level: str, context: int,
              device: str | None = None, *, runtime: str = RUNTIME,
              corrections: Mapping[str, Correction] | None = None) -> tuple[MemoryEstimate, str]:
    """``estimate`` calibrated, and how: "measured" (that exact load was seen: its figures, terms it did not
    measure as estimated), "corrected" (terms with a correction of at least ``MIN_LOADS`` loads scaled by it)
    or "estimated" (unchanged). ``corrections``: ``learn_corrections(entries)`` computed once by a caller
    that calibrates many estimates against the same entries."""
    entries = list(entries)
    seen = latest_measurement(entries, model_id, level, context, device, runtime=runtime)
    terms = {name: getattr(estimate, name) for name in TERMS}
    if seen is not None:
        measured = {}
        for name, term in terms.items():
            value = term_bytes(seen.measured, name)
            if value is not None:
                measured[name] = EstimateTerm(value, f"measured by {seen.runtime} on {seen.date} "
                                                     f"(estimated {format_gib(term.bytes, 2)})")
        note = f"measured by {seen.runtime} on {seen.date}: {seen.level} at {seen.context:,} tokens on {seen.device}"
        return _with_terms(estimate, {**terms, **measured}, len(measured) == len(terms), note), "measured"
    corrected = {}
    learned = corrections if corrections is not None else learn_corrections(entries, runtime=runtime)
    for name, c in learned.items():
        term = terms[name]
        if c.usable and term.bytes > 0:
            corrected[name] = EstimateTerm(round(term.bytes * c.factor),
                                           f"{term.explanation} × {c.factor:.2f} learned from {c.loads} loads")
    if not corrected:
        return estimate, "estimated"
    return _with_terms(estimate, {**terms, **corrected}, False, None), "corrected"


def _with_terms(estimate: MemoryEstimate, terms: dict[str, EstimateTerm], exact: bool,
                note: str | None) -> MemoryEstimate:
    return replace(estimate, weights=terms["weights"], kv_cache=terms["kv_cache"], compute=terms["compute"],
                   overhead=terms["overhead"], approximate=estimate.approximate and not exact,
                   notes=estimate.notes + ((note,) if note else ()))


def bounded(entries: list[Calibration], max_entries: int = MAX_ENTRIES,
            max_per_key: int = MAX_PER_KEY) -> list[Calibration]:
    """The newest ``max_entries`` entries, at most ``max_per_key`` per key, oldest first."""
    kept: list[Calibration] = []
    per_key: dict[tuple[str, str, int, str], int] = {}
    for e in reversed(entries):
        if len(kept) >= max_entries:
            break
        n = per_key.get(e.key, 0)
        if n < max_per_key:
            per_key[e.key] = n + 1
            kept.append(e)
    kept.reverse()
    return kept


# ------------------------------------------------------------------------------------------------
# The file
# ------------------------------------------------------------------------------------------------


@dataclass
class _Disk:
    """What is at the path: "missing", "ok", "damaged" (move it aside; ``entries`` are the valid ones),
    or "blocked" (cannot be looked at or must not be replaced: ``problem`` says why)."""

    state: str
    entries: list[Calibration] = field(default_factory=list)
    problem: str = ""


def _parse(data: bytes) -> _Disk:
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        return _Disk("damaged", problem=f"it is not UTF-8 text (byte {err.start})")
    except RecursionError:
        return _Disk("damaged", problem="it is nested too deeply to be calibration data")
    except ValueError as err:  # bad JSON, or an integer with thousands of digits
        return _Disk("damaged", problem=f"it is not valid JSON ({_UNPRINTABLE.sub('?', str(err))[:120]})")
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        return _Disk("damaged", problem="it is not an object with an 'entries' list")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return _Disk("damaged", problem=f"its version {_brief(version)} is not one ModelDeck writes")
    if version > FILE_VERSION:
        return _Disk("blocked", problem=f"it was written by a newer ModelDeck (version {version}; this one reads "
                                        f"up to {FILE_VERSION}); it is left as it is. Update ModelDeck")
    raw = doc["entries"]
    if len(raw) > MAX_FILE_ENTRIES:
        return _Disk("damaged", problem=f"it holds {len(raw):,} entries, more than ModelDeck keeps ({MAX_ENTRIES})")
    entries, bad = [], []
    for i, item in enumerate(raw):
        try:
            entries.append(Calibration.from_json(item))
        except (CalibrationError, TypeError) as err:
            bad.append(f"entry {i}: {err}")
    if bad:
        return _Disk("damaged", entries, f"{len(bad)} of {len(raw)} entries are invalid ({bad[0]})")
    return _Disk("ok", entries)


def _read(path: Path) -> _Disk:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _Disk("missing")
    except OSError as err:
        return _Disk("blocked", problem=f"it cannot be looked at ({err.strerror or err}); make its folder readable")
    if not stat.S_ISREG(st.st_mode):
        return _Disk("damaged", problem="it is not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        return _Disk("damaged", problem=f"it is {st.st_size / MiB:,.0f} MiB, over the "
                                        f"{MAX_FILE_BYTES // MiB} MiB calibration data can take")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        return _Disk("damaged", problem=f"it cannot be read ({err.strerror or err})")
    if len(data) > MAX_FILE_BYTES:
        return _Disk("damaged", problem=f"it grew over the {MAX_FILE_BYTES // MiB} MiB calibration data can take")
    return _parse(data)


def _move_aside(path: Path) -> tuple[bool, str]:
    """Rename the damaged file to a backup name not yet taken (under the lock); (moved, what happened)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        backup = path.with_name(f"{path.name}.bad-{stamp}" + (f"-{n}" if n > 1 else ""))
        if os.path.lexists(backup):
            continue
        try:
            os.rename(path, backup)
        except OSError as err:
            return False, f"it could not be moved aside ({err.strerror or err}) and was left in place"
        return True, f"it was kept as {backup}"
    return False, "it was left in place (too many backups in one second)"


def _write(path: Path, entries: list[Calibration]) -> None:
    """Replace the file atomically; an OSError leaves the old file as it was (and no temp file)."""
    lines = ",\n".join(" " + json.dumps(e.to_json(), ensure_ascii=False) for e in entries)
    data = f'{{"version": {FILE_VERSION}, "entries": [\n{lines}\n]}}\n'.encode()
    atomic_write(path, data)


def _clean_stale_temps(path: Path) -> None:
    """Temp files of killed writes (our naming, older than a few seconds), removed under the lock."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    now = time.time()
    try:
        items = list(os.scandir(path.parent))
    except OSError:
        return
    for item in items:
        try:
            if (pattern.fullmatch(item.name) and item.is_file(follow_symlinks=False)
                    and now - item.stat(follow_symlinks=False).st_mtime > TEMP_STALE_AFTER_S):
                os.unlink(item.path)
        except OSError:
            continue


class CalibrationStore:
    """Calibration entries in ``calibration.json`` (default: the user data directory), shared by every
    ModelDeck process. Reads never raise (a problem is one warning line, once per store); ``record`` and
    ``clear`` raise :class:`CalibrationError`. See the module docstring for the format and the rules."""

    def __init__(self, path: Path | str | None = None, *, lock_timeout: float = LOCK_TIMEOUT_S,
                 max_entries: int = MAX_ENTRIES, max_per_key: int = MAX_PER_KEY) -> None:
        self.path = Path(path) if path is not None else default_calibration_path()
        self.lock_timeout = lock_timeout
        self.max_entries = max_entries
        self.max_per_key = max_per_key
        #: The warnings this store has logged (each once).
        self.problems: list[str] = []

    # --- reading --------------------------------------------------------------------------------
    def entries(self) -> list[Calibration]:
        """Every entry, oldest first (the newest recorded last)."""
        disk = _read(self.path)
        if disk.state == "damaged":
            lock = self._lock()
            try:
                lock.acquire()
            except (OSError, CalibrationError) as err:  # a read-only folder, or a stuck writer
                self._warn(f"calibration data {self.path} could not be read ({disk.problem}); it was left in place "
                           f"({_first_line(err)})")
                return disk.entries
            try:
                disk = _read(self.path)  # another process may have repaired it meanwhile
                if disk.state == "damaged":
                    self._set_aside(disk, repair=True)
            finally:
                lock.release()
        if disk.state == "blocked":
            self._warn(f"calibration data {self.path} is not used: {disk.problem}")
        return disk.entries

    def measured_for(self, model_id: str, level: str, context: int,
                     device: str | None = None) -> dict[str, int] | None:
        """The newest figures llama.cpp measured for exactly this model, level, context (and device)."""
        seen = latest_measurement(self.entries(), model_id, level, context, device)
        return dict(seen.measured) if seen is not None else None

    def corrections(self) -> dict[str, Correction]:
        """The learned correction per term (see :func:`learn_corrections`)."""
        return learn_corrections(self.entries())

    def apply(self, estimate: MemoryEstimate, model_id: str, level: str, context: int,
              device: str | None = None) -> tuple[MemoryEstimate, str]:
        """The estimate calibrated, and "measured", "corrected" or "estimated" (see :func:`calibrate`)."""
        return calibrate(self.entries(), estimate, model_id, level, context, device)

    # --- writing --------------------------------------------------------------------------------
    def record(self, entry: Calibration) -> None:
        """Append one entry (the file stays bounded)."""
        if not isinstance(entry, Calibration):
            raise TypeError(f"record() takes a Calibration, not {type(entry).__name__}")
        self._change(lambda entries: [*entries, entry], "nothing was recorded")

    def clear(self, model_ids: Collection[str] | None = None) -> int:
        """Remove every entry (or those of ``model_ids``); how many were removed."""
        before, after = self._change(lambda entries: [e for e in entries if model_ids is not None
                                                      and e.model_id not in model_ids], "nothing was removed")
        return len(before) - len(after)

    def _change(self, change: Callable[[list[Calibration]], list[Calibration]],
                unchanged: str) -> tuple[list[Calibration], list[Calibration]]:
        """Read, change and write the file under the lock; the entries before and after."""
        lock = self._lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as err:
            raise CalibrationError(f"calibration data cannot be saved in {self.path.parent}: the folder is not "
                                   f"writable ({err.strerror or err}); {unchanged}") from err
        try:
            _clean_stale_temps(self.path)
            disk = _read(self.path)
            if disk.state == "blocked":
                raise CalibrationError(f"calibration data {self.path} is not changed: {disk.problem}; {unchanged}")
            if disk.state == "damaged" and not self._set_aside(disk, repair=False):
                raise CalibrationError(f"calibration data {self.path} is damaged and could not be moved aside; "
                                       f"move it away by hand; {unchanged}")
            after = bounded(change(disk.entries), self.max_entries, self.max_per_key)
            try:
                _write(self.path, after)
            except OSError as err:
                raise CalibrationError(f"calibration data {self.path} could not be written ({err.strerror or err}); "
                                       f"it is unchanged and {unchanged}. Free some disk space or make the folder "
                                       "writable") from err
            return disk.entries, after
        finally:
            lock.release()

    # --- internals ------------------------------------------------------------------------------
    def _lock(self) -> FileLock:
        return FileLock.beside(self.path, self.lock_timeout, busy=self._busy, what="calibration writes")

    def _busy(self) -> CalibrationError:
        return CalibrationError(
            f"another ModelDeck process has been writing {self.path} for over {self.lock_timeout:g} s; nothing "
            "was changed. Try again, or close the other ModelDeck.")

    def _set_aside(self, disk: _Disk, *, repair: bool) -> bool:
        """Move a damaged file aside (the lock is held), say so once, and (``repair``) write its valid
        entries back; whether it was moved."""
        moved, where = _move_aside(self.path)
        kept = f"; its {len(disk.entries)} valid entries are kept" if moved and disk.entries else ""
        self._warn(f"calibration data {self.path} could not be read ({disk.problem}); {where}{kept}")
        if moved and repair and disk.entries:
            try:
                _write(self.path, bounded(disk.entries, self.max_entries, self.max_per_key))
            except OSError as err:
                self._warn(f"calibration data {self.path} could not be written again ({err.strerror or err})")
        return moved

    def _warn(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)
            _log.warning("%s", message)


def _first_line(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return str(text).splitlines()[0] if text else type(err).__name__

