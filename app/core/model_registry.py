"""ModelRegistry: the models ModelDeck knows, what they need, and where they came from.

Built-in models come from a data file (``app/core/data/catalog.json``, every entry with its
source); user models are persisted atomically in the user data directory, shared by every
ModelDeck process (saves merge under a file lock; see ``UserModelStore``); scanned models come
from GGUF / safetensors headers. The seed's API (``ModelMetadata``, ``ModelProvider``,
``ModelType``, ``get_model``, ``list_models``, ``register_model``) keeps working.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.core.events import Signal

# The model description types live in app.core.model_spec (below this module and the
# quantization strategy); they are re-exported here, where the seed's API has always had them.
from app.core.model_spec import (
    ModelArchitecture,
    ModelMetadata,
    ModelProvider,
    ModelType,
    Origin,
    normalize_alias,
)
from app.core.quantization_strategy import EstimateUnavailable, QuantizationStrategy, fill_requirements
from app.core.storage import FileLock, atomic_write

__all__ = [
    "ModelProvider",
    "ModelType",
    "ModelArchitecture",
    "ModelMetadata",
    "ModelRegistry",
    "RegistryError",
    "BuiltinConflict",
    "InvalidModel",
    "UserModelStore",
    "validate_user_model",
    "normalize_alias",
    "Origin",
    "metadata_for_path",
    "missing_facts",
]

_log = logging.getLogger(__name__)

USER_FILE_VERSION = 1


class RegistryError(Exception):
    """A registry operation that cannot be done, with what to do instead."""


class InvalidModel(RegistryError):
    """A user model the registry will not save: ``field`` names what is wrong (``model_id``,
    ``parameters``); the message says what to do, in one line."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class BuiltinConflict(RegistryError):
    """A user entry whose id is a built-in model's: registering it would replace the built-in
    everywhere. ``builtin`` is the built-in entry; ``suggested_id`` a free id for a copy."""

    def __init__(self, builtin: ModelMetadata, suggested_id: str) -> None:
        self.builtin = builtin
        self.suggested_id = suggested_id
        super().__init__(
            f"{builtin.id!r} is the built-in model {builtin.name!r}; saving under that id would replace it "
            f"everywhere. Save it as a copy under another id (e.g. {suggested_id!r}), or override the built-in "
            "explicitly (register_model(..., override=True); deleting the override brings the built-in back)")


class RegistryWriteError(RegistryError, OSError):
    """The user's model list could not be written (a full disk, a read-only folder, an I/O error); the file
    is unchanged. Both a :class:`RegistryError` and the ``OSError`` it comes from."""


# ------------------------------------------------------------------------------------------------
# User models on disk
# ------------------------------------------------------------------------------------------------


def default_user_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("modeldeck", appauthor=False)) / "models.json"


#: A model list larger than this is not read (and never replaced): a few thousand models take a few MB.
MAX_USER_FILE_BYTES = 64 * 1024 * 1024
#: A list nested deeper than this is not a model list (entries are a few levels deep).
MAX_USER_FILE_DEPTH = 64
#: How long a save waits for another process's save before giving up with a message.
LOCK_TIMEOUT_S = 10.0
#: Temp files of ours older than this, found while holding the lock, are leftovers of killed saves.
TEMP_STALE_AFTER_S = 5.0

_MKSTEMP_NAME = r"[a-z0-9_]{8}"  # tempfile.mkstemp's random part


class _Disk:
    """What is at the model list's path now."""

    def __init__(self, state: str, problem: str | None = None, *, doc: dict[str, Any] | None = None,
                 mode: int | None = None, read_only: bool = False, reason: str = "") -> None:
        #: "missing", "ok", "same" (the bytes this process last wrote), "corrupt" (move it aside),
        #: "newer" (a newer ModelDeck's), or "blocked"
        #: (cannot be read or must not be replaced: unreadable, too big, a folder...).
        self.state = state
        self.problem = problem
        self.doc = doc
        self.mode = mode
        self.read_only = read_only
        #: Why a "newer" file is not read here.
        self.reason = reason


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _dump(model: ModelMetadata) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


class UserModelStore:
    """The user's models as a versioned JSON file, shared safely by every ModelDeck process.

    * Saves merge: under a file lock (see ``app.core.storage.FileLock``), the file is read again and only what this
      process changed since it last read or wrote it (models added, changed or removed) is applied
      to it; models another process added or removed meanwhile are kept as that process left them
      (for one model changed by both, the later save wins).
    * Writes are atomic: a temporary file in the same folder, fsynced, renamed over the old file
      (keeping its permission bits), then the folder fsynced. Temp files of killed saves are
      removed by the next load once older than a few seconds; nothing else is ever removed.
    * A file that is not a model list (bad JSON or UTF-8, nested too deeply, wrong shape) is
      moved aside to a unique ``<name>.corrupt-<time>[-n]`` backup (never deleted, never
      overwritten) and reported; entries that fail validation are kept verbatim in the file's
      ``invalid`` list.
    * A file that cannot be read (permissions, I/O error), is read-only, is over
      ``MAX_USER_FILE_BYTES``, is a folder, or comes from a newer ModelDeck is reported in
      ``problems`` and never replaced: saves raise ``RegistryError`` naming the file and the fix.
    """

    def __init__(self, path: Path | str, *, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self.problems: list[str] = []
        #: The file's models as this process last read or wrote them (id -> normalized entry).
        self._base: dict[str, dict[str, Any]] = {}
        #: The bytes this process last wrote, with what they hold (models, entries, invalid list).
        self._known: tuple[bytes, dict[str, ModelMetadata], dict[str, Any], list[Any]] | None = None
        #: Problems that stop saves; dropped from ``problems`` once a save succeeds.
        self._blocking: set[str] = set()

    # --- public ---------------------------------------------------------------------------------
    def lock(self) -> FileLock:
        """The lock every load and save of this file holds (a context manager)."""
        return FileLock.beside(self.path, self.lock_timeout, busy=self._busy, what="model list saves")

    def _busy(self) -> RegistryError:
        return RegistryError(
            f"another ModelDeck process has been saving {self.path} for over {self.lock_timeout:g} s; nothing was "
            "changed. Try again, or close the other ModelDeck (a window or a `modeldeck scan`) if it is stuck.")

    def load(self) -> list[ModelMetadata]:
        self.problems = []
        self._blocking = set()
        self._base = {}
        self._known = None
        lock: FileLock | None = None
        try:
            candidate = self.lock()
            candidate.acquire()
            lock = candidate
        except (OSError, RegistryError) as err:  # no folder yet, a read-only folder, or a stuck holder
            _log.debug("reading %s without the lock: %s", self.path, err)
        try:
            if lock is not None:
                self._clean_stale_temps()
            disk = self._read()
            if disk.state in ("corrupt", "newer"):
                why = disk.reason or disk.problem or ""
                if lock is None:  # moving it aside is left to a save, which holds the lock
                    self._report(f"your model list {self.path} could not be read ({why}); it was left in place. "
                                 "Built-in models still load.")
                else:  # a newer ModelDeck's list is moved aside too (it stays as the backup, untouched)
                    self._report(self._move_aside(why))
                return []
            if disk.state != "ok":
                if disk.problem:
                    self._report(disk.problem, blocking=True)
                return []
            if disk.read_only:
                self._report(self._read_only_message(), blocking=True)
            valid, _ = self._entries(disk.doc or {}, report=True)
            self._base = {m.id: _dump(m) for m, _ in valid}
            return [m for m, _ in valid]
        finally:
            if lock is not None:
                lock.release()

    def save(self, models: Iterable[ModelMetadata]) -> list[ModelMetadata]:
        """Apply this process's changes since it last read the file to the file as it is now;
        returns the user models the file holds afterwards (including other processes' models)."""
        models_by_id = {m.id: m for m in models}
        mine = {mid: _dump(m) for mid, m in models_by_id.items()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = self.lock()
            lock.acquire()
        except OSError as err:
            raise RegistryError(
                f"your model list {self.path} cannot be saved: its folder is not writable ({err}); nothing "
                "was changed"
            ) from err
        try:
            disk = self._read(known=self._known[0] if self._known else None)
            if disk.state in ("blocked", "newer"):
                message = disk.problem or f"your model list {self.path} cannot be saved"
                self._report(message, blocking=True)
                raise RegistryError(message)
            if disk.read_only:
                message = self._read_only_message()
                self._report(message, blocking=True)
                raise RegistryError(message)
            base = self._base
            current: dict[str, ModelMetadata] = {}
            raw: dict[str, Any] = {}  # entries written back exactly as found unless changed here
            invalid: list[Any] = []
            if disk.state == "corrupt":
                self._report(self._move_aside(disk.problem or ""))
                base = {}  # everything this process knows is written again
            elif disk.state == "same" and self._known is not None:  # as this process last left it
                _, current, raw, invalid = self._known
                current, raw, invalid = dict(current), dict(raw), list(invalid)
            elif disk.state == "ok":
                valid, invalid = self._entries(disk.doc or {}, report=False)
                for model, item in valid:
                    current[model.id] = model
                    raw[model.id] = item
            for mid in base.keys() - mine.keys():  # removed here
                current.pop(mid, None)
                raw.pop(mid, None)
            for mid, entry in mine.items():  # added or changed here
                if base.get(mid) != entry:
                    current[mid] = models_by_id[mid]
                    raw[mid] = entry
            doc = {"version": USER_FILE_VERSION, "models": list(raw.values()), "invalid": invalid}
            try:
                data = self._write(doc, disk.mode)
            except OSError as err:  # a full disk, a read-only folder, an I/O error: the old file stays
                raise RegistryWriteError(
                    f"your model list {self.path} could not be written ({err.strerror or err}); it is unchanged. "
                    "Free some disk space or make its folder writable, then try again") from err
            # What stopped earlier saves (permissions, a folder in the way...) has been fixed.
            self.problems = [p for p in self.problems if p not in self._blocking]
            self._blocking.clear()
            self._known = (data, current, raw, invalid)
            self._base = {mid: mine[mid] if current[mid] is models_by_id.get(mid) else _dump(m)
                          for mid, m in current.items()}
            return list(current.values())
        finally:
            lock.release()

    # --- reading ----------------------------------------------------------------------------------
    def _read(self, known: bytes | None = None) -> _Disk:
        """The file now; ``state == "same"`` (not parsed again) when its bytes are ``known``."""
        path = self.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return _Disk("missing")
        except OSError as err:
            return _Disk("blocked", self._unreadable_message(err))
        if stat.S_ISDIR(st.st_mode):
            return _Disk("blocked", f"your model list {path} is a folder, not a file; ModelDeck leaves it alone and "
                                    "cannot save models until it is moved away. Built-in models still load.")
        if not stat.S_ISREG(st.st_mode):
            return _Disk("blocked", f"your model list {path} is not a regular file; ModelDeck leaves it alone and "
                                    "cannot save models until it is moved away. Built-in models still load.")
        if st.st_size > MAX_USER_FILE_BYTES:
            return _Disk("blocked", self._too_big_message(st.st_size))
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_BINARY", 0))
        except OSError as err:
            return _Disk("blocked", self._unreadable_message(err))
        try:
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(MAX_USER_FILE_BYTES + 1)
        except OSError as err:
            return _Disk("blocked", self._unreadable_message(err))
        if len(data) > MAX_USER_FILE_BYTES:
            return _Disk("blocked", self._too_big_message(len(data)))
        mode = stat.S_IMODE(st.st_mode) & 0o777
        read_only = not (st.st_mode & stat.S_IWUSR) or not os.access(path, os.W_OK)
        if known is not None and data == known:
            return _Disk("same", mode=mode, read_only=read_only)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            return _Disk("corrupt", f"it is not UTF-8 text (byte {err.start})")
        try:
            raw = json.loads(text)
        except RecursionError:
            return _Disk("corrupt", f"it is nested too deeply (over {MAX_USER_FILE_DEPTH} levels)")
        except ValueError as err:
            return _Disk("corrupt", f"it is not valid JSON: {err}")
        if _depth_exceeds(raw, MAX_USER_FILE_DEPTH):
            return _Disk("corrupt", f"it is nested too deeply (over {MAX_USER_FILE_DEPTH} levels)")
        if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
            return _Disk("corrupt", "expected an object with a 'models' list")
        version = raw.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            return _Disk("corrupt", f"unsupported version {version!r}")
        if version > USER_FILE_VERSION:
            return _Disk(
                "newer",
                f"your model list {path} was written by a newer ModelDeck (version {version}; this one reads up to "
                f"{USER_FILE_VERSION}); it is left as it is and this ModelDeck will not save models over it. "
                "Update ModelDeck.",
                doc=raw, mode=mode, read_only=read_only,
                reason=f"unsupported version {version} (this ModelDeck reads up to {USER_FILE_VERSION})",
            )
        return _Disk("ok", doc=raw, mode=mode, read_only=read_only)

    def _entries(self, doc: dict[str, Any], *, report: bool) -> tuple[list[tuple[ModelMetadata, Any]], list[Any]]:
        """The file's valid models (each with its entry as found), and its invalid entries (kept verbatim)."""
        invalid = doc.get("invalid", [])
        if not isinstance(invalid, list):
            if report:
                self._report(f"the 'invalid' field of {self.path} is not a list ({invalid!r:.60}); its value is kept "
                             "as an entry of that list")
            invalid = [invalid]
        else:
            invalid = list(invalid)
        models: list[tuple[ModelMetadata, Any]] = []
        for i, entry in enumerate(doc["models"]):
            try:
                models.append((ModelMetadata.model_validate(entry), entry))
            except ValidationError as err:
                invalid.append(entry)
                if report:
                    first = err.errors()[0]
                    field = ".".join(str(p) for p in first.get("loc", ())) or "entry"
                    self._report(f"model #{i} in {self.path} is invalid ({field}: {first.get('msg')}); "
                                 "it is kept in the file", level=logging.WARNING)
        return models, invalid

    # --- writing ----------------------------------------------------------------------------------
    def _write(self, doc: dict[str, Any], mode: int | None) -> bytes:
        data = json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")
        if len(data) > MAX_USER_FILE_BYTES:
            raise RegistryError(f"your model list {self.path} would grow to {len(data)} bytes, over the "
                                f"{MAX_USER_FILE_BYTES // (1024 * 1024)} MiB limit; nothing was changed")
        atomic_write(self.path, data, mode=mode)  # the file keeps its permissions
        return data

    def _move_aside(self, why: str) -> str:
        """Move the unreadable file to a backup name no other backup has; the message to report."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        where = "it was left in place"
        for n in range(1, 1000):
            backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}" + (f"-{n}" if n > 1 else ""))
            try:  # reserve the name, so two backups in one second never replace each other
                os.close(os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                continue
            except OSError as err:
                where = f"it could not be moved aside ({err}); it was left in place"
                break
            try:
                os.replace(self.path, backup)
                where = f"it was kept as {backup}"
            except OSError as err:
                where = f"it could not be moved aside ({err}); it was left in place"
                try:
                    os.unlink(backup)
                except OSError:
                    pass
            break
        return f"your model list {self.path} could not be read ({why}); {where}. Built-in models still load."

    def _clean_stale_temps(self) -> None:
        """Remove temp files killed saves left (our naming only, regular files, older than a few
        seconds); called with the lock held, when no save of a current ModelDeck is under way."""
        pattern = re.compile(re.escape(f".{self.path.name}.") + _MKSTEMP_NAME + re.escape(".tmp"))
        now = time.time()
        removed = 0
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return
        for item in entries:
            if not pattern.fullmatch(item.name):
                continue
            try:
                st = item.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > TEMP_STALE_AFTER_S:
                    os.unlink(item.path)
                    removed += 1
            except OSError:
                continue
        if removed:
            _log.info("removed %d temp file(s) left by interrupted saves of %s", removed, self.path)

    # --- messages ---------------------------------------------------------------------------------
    def _report(self, message: str, level: int = logging.ERROR, *, blocking: bool = False) -> None:
        if blocking:
            self._blocking.add(message)
        if message not in self.problems:
            self.problems.append(message)
        _log.log(level, "%s", message)

    def _unreadable_message(self, err: OSError) -> str:
        return (f"your model list {self.path} cannot be read ({err.strerror or err}); it was left untouched, and "
                "ModelDeck will not save models over it. Give your user read and write access to it (for example "
                f"`chmod u+rw '{self.path}'`) and restart ModelDeck. Built-in models still load.")

    def _read_only_message(self) -> str:
        return (f"your model list {self.path} is read-only; ModelDeck reads it but will not change it, so adding, "
                f"changing or removing models is refused. To allow it, make it writable (`chmod u+w '{self.path}'`).")

    def _too_big_message(self, size: int) -> str:
        limit = MAX_USER_FILE_BYTES // (1024 * 1024)
        return (f"your model list {self.path} is {size / (1024 * 1024):.0f} MiB, over the {limit} MiB limit for a "
                "model list; it was not read and ModelDeck will not save models over it. Move it away (or trim "
                "it). Built-in models still load.")


# ------------------------------------------------------------------------------------------------
# Catalog
# ------------------------------------------------------------------------------------------------


def _catalog_entry(entry: dict[str, Any]) -> ModelMetadata:
    params = entry.get("parameters")
    return ModelMetadata(
        name=entry["name"],
        provider=entry.get("provider") or "other",
        model_type=entry["model_type"],
        size_gb=round(params / 1e9, 3) if params else entry.get("size_gb"),
        supports_quantization=entry.get("model_type") != "text_to_speech",
        huggingface_id=entry["id"],
        model_id=entry["id"],
        runtime_backend=entry.get("runtime"),
        preferred_runtime_format=(
            "gguf" if entry.get("model_type") == "llm" and "gguf" in entry.get("formats", ()) else None
        ),
        aliases=tuple(entry.get("aliases") or ()),
        parameters=params,
        parameters_exact=bool(entry.get("parameters_exact")),
        architecture=entry.get("architecture"),
        native_dtype=entry.get("native_dtype"),
        formats=tuple(entry.get("formats") or ()),
        default_resolution=entry.get("default_resolution"),
        quality_note=entry.get("quality_note"),
        source=entry.get("source"),
        license=entry.get("license"),
        origin="builtin",
    )


def load_catalog(path: Path | str | None = None) -> list[ModelMetadata]:
    """The built-in catalog; a broken entry is a bug in ModelDeck and raises with its id."""
    if path is None:
        text = resources.files("app.core").joinpath("data/catalog.json").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = json.loads(text)
    out = []
    for entry in raw["models"]:
        try:
            out.append(fill_requirements(_catalog_entry(entry)))
        except (ValidationError, KeyError) as err:
            raise RegistryError(f"built-in catalog entry {entry.get('id')!r} is invalid: {err}") from err
    return out


# ------------------------------------------------------------------------------------------------
# What a user model must be
# ------------------------------------------------------------------------------------------------


def _repo_id_problem(model_id: str) -> str | None:
    """Why ``model_id`` is not a Hugging Face ``org/name`` (Hugging Face's own rules), or None."""
    if model_id.count("/") != 1:
        return "it is not of the form org/name"
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None if re.fullmatch(r"[\w.-]+/[\w.-]+", model_id) else "it has characters a repository id cannot have"
    try:
        validate_repo_id(model_id)
    except HFValidationError as err:
        return str(err).split(":")[0].rstrip(".").lower().replace("repo id", "a repository id")
    return None


def validate_user_model(metadata: ModelMetadata) -> None:
    """Raise :class:`InvalidModel` (field and what to do) unless ``metadata`` is a user model ModelDeck can
    plan: its id a Hugging Face ``org/name`` or an existing file or folder, and a size to estimate from
    (a parameter count over 0, or an architecture complete enough to model the weights)."""
    model_id = metadata.id.strip()
    if model_id != metadata.id or not model_id:
        raise InvalidModel("model_id", "the id must not be empty or start or end with spaces")
    local = model_id.removeprefix("file:")
    if not os.path.exists(os.path.expanduser(local)):
        problem = _repo_id_problem(model_id)
        if problem:
            raise InvalidModel("model_id", f"{model_id!r} is not a Hugging Face id ({problem}) nor an existing file "
                                           "or folder; use org/name (letters, digits, '-', '_', '.') or a model's path")
    if not metadata.parameter_count and metadata.estimation_architecture is None:
        raise InvalidModel("parameters", "give the parameter count (more than 0), or read the architecture from the "
                                         "model's config.json or GGUF file")


def copy_id(model_id: str, taken: Callable[[str], bool]) -> str:
    """A free id for a copy of ``model_id``: ``<id>-copy``, then ``<id>-copy2`` …"""
    base = f"{model_id}-copy"
    candidate, n = base, 1
    while taken(candidate):
        n += 1
        candidate = f"{base}{n}"
    return candidate


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------

_DEFAULT = object()


class ModelRegistry:
    """Registry of models with hardware requirements.

    Signals:
        registry_changed(): after any registration, update or removal (on the caller's thread).
    """

    def __init__(
        self,
        *,
        catalog: Iterable[ModelMetadata] | Path | str | None = None,
        user_store: UserModelStore | Path | str | None | object = _DEFAULT,
        include_builtin: bool = True,
    ) -> None:
        self.logger = _log
        self._lock = threading.RLock()
        self._models: dict[str, ModelMetadata] = {}
        self._builtins: dict[str, ModelMetadata] = {}
        self._aliases: dict[str, str] = {}
        self._search_cache: list[tuple[str, str]] | None = None
        self._trigrams: tuple[dict[str, set[int]], list[tuple[str, str]]] | None = None
        self.registry_changed: Signal[Callable[[], None]] = Signal("registry_changed")
        if user_store is _DEFAULT:
            user_store = UserModelStore(default_user_path())
        elif isinstance(user_store, (str, Path)):
            user_store = UserModelStore(user_store)
        self._store: UserModelStore | None = user_store  # type: ignore[assignment]
        if include_builtin:
            entries = (catalog if isinstance(catalog, Iterable) and not isinstance(catalog, (str, Path))
                       else load_catalog(catalog))
            for m in entries:
                self._builtins[m.id] = m
                self._add(m)
        if self._store is not None:
            for m in self._store.load():
                self._add(m)

    # --- seed API ------------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, ModelMetadata]:
        """Canonical entries keyed by model id."""
        with self._lock:
            return dict(self._models)

    @property
    def problems(self) -> list[str]:
        """What went wrong loading the user's models (empty when all is well)."""
        return list(self._store.problems) if self._store else []

    def get_model(self, model_id: str) -> ModelMetadata | None:
        """By id, Hugging Face id, name or alias, exactly or normalized (case and punctuation ignored)."""
        with self._lock:
            if model_id in self._models:
                return self._models[model_id]
            canonical = self._aliases.get(model_id) or self._aliases.get(normalize_alias(model_id))
            return self._models.get(canonical) if canonical else None

    def list_models(
        self,
        provider: ModelProvider | str | None = None,
        model_type: ModelType | str | None = None,
        *,
        fits: Callable[[ModelMetadata], bool] | None = None,
    ) -> list[ModelMetadata]:
        """Models filtered by provider, type and (optionally) a fit predicate."""
        with self._lock:
            models = list(self._models.values())
        if provider is not None:
            want = provider.value if isinstance(provider, ModelProvider) else str(provider).lower()
            models = [m for m in models if m.provider_name == want]
        if model_type is not None:
            mt = model_type if isinstance(model_type, ModelType) else ModelType(str(model_type).lower())
            models = [m for m in models if m.model_type == mt]
        if fits is not None:
            models = [m for m in models if fits(m)]
        return models

    def register_model(self, metadata: ModelMetadata, *, persist: bool = True,
                       override: bool = False) -> ModelMetadata:
        """Register (or replace) a model. User and scanned models are saved to the user's file, and
        checked first (:func:`validate_user_model`: raises :class:`InvalidModel`). A user entry
        never replaces a built-in silently: its id must not be a built-in's (raises
        :class:`BuiltinConflict`) unless ``override`` asks for exactly that (deleting the override
        brings the built-in back). Re-registering one's own user id simply replaces it."""
        with self._lock:
            if metadata.origin != "builtin":
                self._check_user_entry(metadata, persist=persist, override=override)
            before = self._models.get(metadata.id)
            self._add(metadata)
            if persist and metadata.origin != "builtin":
                self._save(undo=lambda: self._restore(metadata.id, before))
        self.logger.info("registered model %s", metadata.id)
        self.registry_changed.emit()
        return metadata

    def update_model(self, model_id: str, /, *, override: bool = False, **changes: Any) -> ModelMetadata:
        """Change fields of a user or scanned model (validated; a new ``model_id`` renames it, never onto
        another model or, unless ``override``, a built-in); a built-in is copied as a user override."""
        with self._lock:
            current = self.get_model(model_id)
            if current is None:
                raise RegistryError(f"no model {model_id!r}; `modeldeck models` lists the known ones")
            data = current.model_dump()
            data.update(changes)
            if current.origin == "builtin":
                data["origin"] = "user"
            updated = ModelMetadata.model_validate(data)
            if updated.id != current.id:  # renamed: never onto another model, nor a built-in's id unasked
                if updated.id in self._models and self._models[updated.id].origin != "builtin":
                    raise RegistryError(f"{updated.id!r} is already a model of yours; choose another id")
                self._check_user_entry(updated, persist=True, override=override)
            elif updated.origin == "user":
                validate_user_model(updated)
            replaced = self._models.get(updated.id)

            def undo() -> None:
                self._restore(updated.id, replaced)
                self._restore(current.id, current)

            self._remove(current.id)
            self._add(updated)
            self._save(undo=undo)
        self.registry_changed.emit()
        return updated

    def remove_model(self, model_id: str) -> None:
        """Remove a user or scanned model. Built-in models cannot be removed."""
        with self._lock:
            current = self.get_model(model_id)
            if current is None:
                raise RegistryError(f"no model {model_id!r} to remove")
            if current.origin == "builtin":
                raise RegistryError(
                    f"{current.id} is built in and cannot be removed; register a user entry to override it"
                )
            self._drop_user(current.id)
            self._save(undo=lambda: self._restore(current.id, current))
        self.registry_changed.emit()

    # --- built-ins and their overrides ------------------------------------------------------------
    def builtin(self, model_id: str) -> ModelMetadata | None:
        """The built-in entry a user entry with this id would shadow (by id, Hugging Face id or alias,
        case and punctuation ignored), or None."""
        if model_id in self._builtins:
            return self._builtins[model_id]
        wanted = normalize_alias(model_id)
        for b in self._builtins.values():
            if wanted in {normalize_alias(a) for a in (b.id, b.huggingface_id, *b.aliases) if a}:
                return b
        return None

    def is_override(self, model_id: str) -> bool:
        """True when ``model_id`` is a user entry standing in for a built-in (delete it to revert)."""
        with self._lock:
            current = self._models.get(model_id)
            return current is not None and current.origin != "builtin" and model_id in self._builtins

    def _check_user_entry(self, metadata: ModelMetadata, *, persist: bool, override: bool) -> None:
        if persist and metadata.origin == "user":
            validate_user_model(metadata)
        shadowed = self.builtin(metadata.id)
        if shadowed is None or override:
            return
        current = self._models.get(shadowed.id)
        if shadowed.id == metadata.id and current is not None and current.origin != "builtin":
            return  # already overridden, explicitly: this replaces the override
        raise BuiltinConflict(shadowed, copy_id(metadata.id, lambda i: self.get_model(i) is not None
                                                or self.builtin(i) is not None))

    # --- hardware ------------------------------------------------------------------------------
    def fits(self, metadata: ModelMetadata, hardware: Any, strategy: Any = None) -> bool:
        """True when the model runs whole on GPUs now, on one or split over several (or, on a machine
        without GPUs, in RAM)."""
        strategy = strategy or QuantizationStrategy()
        try:
            plan = strategy.plan(metadata, hardware)
        except EstimateUnavailable:
            return False
        has_gpu = any(not g.lost for g in hardware.gpus)
        return plan.placement in ("gpu", "split") or (not has_gpu and plan.placement == "cpu")

    def select_best_model(
        self,
        provider: ModelProvider | str | None = None,
        model_type: ModelType | str | None = None,
        hardware: Any = None,
        strategy: Any = None,
    ) -> ModelMetadata | None:
        """The largest model of this provider and type that fits the hardware now."""
        if hardware is None:
            from app.core.hardware_profiler import HardwareProfiler

            hardware = HardwareProfiler().get_profile()
        fitting = self.list_models(provider, model_type, fits=lambda m: self.fits(m, hardware, strategy))
        if not fitting:
            return None
        return max(fitting, key=lambda m: (m.parameter_count or 0, m.origin == "builtin"))

    # --- scanned files -------------------------------------------------------------------------
    def register_scanned(self, scanned: Any, *, persist: bool = True) -> ModelMetadata:
        """Register a model read from disk (an ``app.core.importers.ScannedModel``)."""
        metadata = fill_requirements(metadata_from_scan(scanned))
        shadowed = self.builtin(metadata.id)
        current = self._models.get(metadata.id)
        if shadowed is not None and not (current is not None and current.origin != "builtin"):
            # A cached copy of a built-in model: registered beside it, by its path, never over it.
            metadata = metadata.model_copy(update={"model_id": f"file:{metadata.path}"})
        return self.register_model(metadata, persist=persist)

    # --- search ---------------------------------------------------------------------------------
    def search(self, query: str, limit: int = 20) -> list[ModelMetadata]:
        """Models matching every word of ``query`` (ids, names, aliases, provider), best first;
        when nothing matches, the closest names (typos forgiven)."""
        words = [normalize_alias(w) for w in str(query).split()]
        words = [w for w in words if w]
        if not words:
            return []
        with self._lock:
            if self._search_cache is None:
                self._search_cache = [(m.search_text(), mid) for mid, m in self._models.items()]
            haystack = self._search_cache
            models = self._models
        joined = "".join(words)
        hits: list[tuple[int, str]] = []
        for text, mid in haystack:
            if all(w in text for w in words):
                # Shorter texts and matches at a word start rank first.
                score = len(text) - (50 if text.startswith(joined) or f" {joined}" in text else 0)
                hits.append((score, mid))
        if hits:
            hits.sort()
            return [models[mid] for _, mid in hits[:limit]]
        return [models[mid] for mid in self._fuzzy(joined, limit)]

    def _fuzzy(self, query: str, limit: int) -> list[str]:
        """Ids whose normalized name or id is closest to ``query`` (typos such as ``whispr`` still find
        ``whisper``); the trigram index is built once per change."""
        with self._lock:
            if self._trigrams is None:
                self._trigrams = _trigram_index(self._models)
            index, keys = self._trigrams
        return _closest(query, index, keys, limit)

    # --- internals ------------------------------------------------------------------------------
    def _add(self, metadata: ModelMetadata) -> None:
        canonical = metadata.id
        self._models[canonical] = metadata
        for alias in (canonical, metadata.name, metadata.huggingface_id, metadata.preferred_download_repo_id,
                      metadata.preferred_download_filename, *metadata.aliases):
            if alias:
                self._aliases[str(alias)] = canonical
                norm = normalize_alias(str(alias))
                # Built-ins never steal a normalized alias another entry already holds; user entries do.
                if norm and (metadata.origin != "builtin" or norm not in self._aliases):
                    self._aliases[norm] = canonical
        self._search_cache = None
        self._trigrams = None

    def _remove(self, canonical: str) -> None:
        self._models.pop(canonical, None)
        self._aliases = {k: v for k, v in self._aliases.items() if v != canonical}
        self._search_cache = None
        self._trigrams = None

    def _restore(self, canonical: str, entry: ModelMetadata | None) -> None:
        """Put back what ``canonical`` was (``None``: absent, or the built-in it overrode)."""
        self._remove(canonical)
        if entry is not None:
            self._add(entry)
        elif canonical in self._builtins:
            self._add(self._builtins[canonical])

    def _drop_user(self, canonical: str) -> None:
        """Forget a user or scanned entry; a built-in it overrode comes back."""
        self._restore(canonical, None)

    def _save(self, undo: Callable[[], None] | None = None) -> None:
        """Save the user models (merged with other processes' changes, see ``UserModelStore``) and
        take in what the others added, changed or removed. When the save fails, ``undo`` puts
        this registry back as it was, so memory never claims what the file does not hold."""
        if self._store is None:
            return
        try:
            merged = self._store.save(m for m in self._models.values() if m.origin != "builtin")
        except BaseException:
            if undo is not None:
                undo()
            raise
        wanted = {m.id: m for m in merged}
        for mid, m in list(self._models.items()):
            if m.origin != "builtin" and mid not in wanted:
                self._drop_user(mid)  # removed by another process
        for mid, m in wanted.items():
            mine = self._models.get(mid)
            if mine is None or _dump(mine) != _dump(m):
                self._add(m)  # added or changed by another process

    def user_models(self) -> list[ModelMetadata]:
        with self._lock:
            return [m for m in self._models.values() if m.origin != "builtin"]


def _trigram_index(models: dict[str, ModelMetadata]) -> tuple[dict[str, set[int]], list[tuple[str, str]]]:
    """Every model's normalized name and id tail, and the trigrams each holds."""
    index: dict[str, set[int]] = {}
    keys: list[tuple[str, str]] = []
    for mid, m in models.items():
        for text in {normalize_alias(m.name), normalize_alias(mid.split("/")[-1])}:
            keys.append((text, mid))
            for i in range(len(text) - 2):
                index.setdefault(text[i:i + 3], set()).add(len(keys) - 1)
    return index, keys


def _closest(query: str, index: dict[str, set[int]], keys: list[tuple[str, str]], limit: int) -> list[str]:
    """Candidates share trigrams with ``query``; difflib ranks the few best."""
    counts: dict[int, int] = {}
    for i in range(len(query) - 2):
        for k in index.get(query[i:i + 3], ()):
            counts[k] = counts.get(k, 0) + 1
    if not counts:
        return []
    top = sorted(counts, key=counts.__getitem__, reverse=True)[:50]
    scored = sorted(((difflib.SequenceMatcher(None, query, keys[k][0]).ratio(), keys[k][1]) for k in top),
                    reverse=True)
    out: list[str] = []
    for ratio, mid in scored:
        if ratio >= 0.5 and mid not in out:
            out.append(mid)
    return out[:limit]


_FAMILY_PROVIDERS = {
    "llama": "llama", "mistral": "mistral", "mixtral": "mistral", "qwen": "qwen", "gemma": "gemma", "phi": "phi",
    "gpt_oss": "openai", "gpt-oss": "openai", "deepseek": "deepseek", "whisper": "whisper", "bert": "other",
    # diffusers pipelines, by their class name
    "stablediffusion": "stable_diffusion", "flux": "flux", "wan": "wan", "ltx": "ltx", "hunyuan": "hunyuan",
}
_EMBEDDING_FAMILIES = ("bert", "xlm-roberta", "xlm_roberta", "nomic_bert", "nomic-bert")
#: Pipeline parts that denoise: a diffusers folder with one of them is an image or video generator.
_DENOISERS = ("unet", "transformer", "prior", "decoder")
#: diffusers pipelines that make videos, besides those with "video" in their class name.
_VIDEO_PIPELINES = ("wan", "ltx", "cogvideo", "mochi", "allegro", "skyreels")


def metadata_from_scan(scanned: Any) -> ModelMetadata:
    """ModelMetadata for a scanned file: exact weight bytes from its header (file size for pickles)."""
    arch = {k: v for k, v in (scanned.architecture or {}).items() if v is not None}
    family = str(arch.get("family") or "").lower()
    provider = next((p for key, p in _FAMILY_PROVIDERS.items() if family.startswith(key)), "other")
    components: dict[str, Any] = arch["components"] if isinstance(arch.get("components"), dict) else {}
    pipeline = any(part in components for part in _DENOISERS) and not arch.get("layers")
    if pipeline:
        video = "video" in family or family.startswith(_VIDEO_PIPELINES)
        model_type = ModelType.TEXT_TO_VIDEO if video else ModelType.TEXT_TO_IMAGE
    elif family.startswith("whisper"):
        model_type = ModelType.SPEECH_TO_TEXT
    elif family.startswith(_EMBEDDING_FAMILIES):
        model_type = ModelType.EMBEDDING
    elif arch.get("layers") or scanned.format in ("gguf",):
        model_type = ModelType.LLM
    else:
        name = f"{scanned.name} {scanned.path}".lower()
        diffusion = any(w in name for w in ("diffusion", "sdxl", "sd15", "sd_xl", "flux", "unet", "vae"))
        model_type = ModelType.TEXT_TO_IMAGE if diffusion else ModelType.LLM
    params = scanned.parameters
    size_gb = round(params / 1e9, 3) if params else round(scanned.weight_bytes / 2 / 1e9, 3)  # pickles: ~16-bit
    runtime = "llama.cpp" if scanned.format == "gguf" or str(scanned.path).endswith(".gguf") else "transformers"
    if pipeline:
        runtime = "diffusers"
    return ModelMetadata(
        name=scanned.name or Path(scanned.path).name,
        provider=provider,
        model_type=model_type,
        size_gb=size_gb,
        huggingface_id=scanned.huggingface_id or "",
        model_id=scanned.huggingface_id if scanned.format == "hf-cache" and runtime != "llama.cpp"
        else f"file:{Path(scanned.path).resolve()}",
        runtime_backend=runtime,
        preferred_runtime_format="gguf" if runtime == "llama.cpp" else "safetensors",
        parameters=params,
        parameters_exact=bool(params and scanned.exact),
        architecture=arch or None,
        formats=(scanned.format,),
        origin="scanned",
        path=str(Path(scanned.path).resolve()),
        weight_bytes=scanned.weight_bytes,
        file_type=scanned.file_type,
        weights_exact=bool(scanned.exact),
        source=str(Path(scanned.path).resolve()),
        quality_note="; ".join(scanned.notes) or None,
    )


# ------------------------------------------------------------------------------------------------
# A model from a path, and what a model lacks
# ------------------------------------------------------------------------------------------------


def metadata_for_path(path: str | os.PathLike[str]) -> ModelMetadata:
    """The model at ``path``, described but not registered: a GGUF file, a folder with a ``config.json``
    (weights beside it or not: a config alone gives the architecture, and the parameters are left to it), a
    Hugging Face cache entry (a ``models--org--name`` folder or one of its snapshots) or a diffusers folder
    (``model_index.json``). Read with the scanner's own readers (:func:`app.core.importers.scan_path`).

    Raises :class:`app.core.importers.ModelImportError` (one line: the path, what is wrong, what to do) for a
    missing path, a folder without a model, an unreadable or corrupt file, or a folder of several models."""
    from app.core.importers import ImportErrorKind, ModelImportError, ScannedModel, read_architecture, scan_path

    full = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(full):
        raise ModelImportError(full, ImportErrorKind.NOT_FOUND,
                               "not found. Check the path: a .gguf file, or a model's folder with its config.json")
    repo = _hf_repo_of_snapshot(full)
    models, errors = scan_path(repo or full)
    if repo is not None:  # one snapshot of a cached repo: its revision only, read as the cache reads it
        models = [m for m in models if m.path == full or m.path.startswith(full + os.sep)]
    if not models:
        if errors:
            raise errors[0]
        if not (os.path.isdir(full) and os.path.isfile(os.path.join(full, "config.json"))):
            raise ModelImportError(full, ImportErrorKind.NOT_FOUND,
                                   "holds no model: no .gguf or .safetensors weights and no config.json. Point at "
                                   "a .gguf file, or a model's folder with its config.json")
        found = read_architecture(full)  # a config.json alone: its architecture, no weights
        notes = ("config.json only: no weights beside it, so the parameters come from the architecture",
                 *found.notes)
        scanned = ScannedModel(path=full, name=os.path.basename(full), format="config", files=(found.path,),
                               file_bytes=0, weight_bytes=0, exact=False, parameters=None, bytes_by_type=(),
                               file_type=None, architecture=found.architecture, notes=notes)
        metadata = metadata_from_scan(scanned).model_copy(update={"size_gb": None, "weight_bytes": None,
                                                                  "formats": ()})
        return _with_requirements(metadata)
    return _with_requirements(metadata_from_scan(_one_model(models, full)))


def _hf_repo_of_snapshot(path: str) -> str | None:
    """The ``models--org--name`` folder of a Hugging Face cache snapshot (``…/snapshots/<revision>``), else None."""
    snapshots = os.path.dirname(path)
    repo = os.path.dirname(snapshots)
    if os.path.basename(snapshots) == "snapshots" and os.path.basename(repo).startswith("models--"):
        return repo
    return None


def _one_model(models: list[Any], full: str) -> Any:
    """The model ``full`` names: the one in that very folder (or that file), the cached revision ``main`` points
    at, or the only one; several equally named are one clear error."""
    from app.core.importers import ImportErrorKind, ModelImportError

    direct = [m for m in models if m.path == full or os.path.dirname(m.path) == full]
    candidates = direct or models
    if len(candidates) > 1:
        main = [m for m in candidates if any(re.search(r"refs: .*\bmain\b", note) for note in m.notes)]
        candidates = main if len(main) == 1 else candidates
    if len(candidates) > 1:
        names = ", ".join(sorted({os.path.basename(m.path) or m.name for m in candidates})[:5])
        raise ModelImportError(full, ImportErrorKind.UNSUPPORTED,
                               f"holds {len(candidates)} models ({names}{', …' if len(candidates) > 5 else ''}). "
                               "Point at one of them: its file or its own folder")
    return candidates[0]


def _with_requirements(metadata: ModelMetadata) -> ModelMetadata:
    """The seed's requirement fields filled as for a registered model, when they can be estimated."""
    try:
        return fill_requirements(metadata)
    except (EstimateUnavailable, ValueError):
        return metadata


#: Models made of a pipeline of parts (denoiser, text encoders, VAE).
_PIPELINE_TYPES = (ModelType.TEXT_TO_IMAGE, ModelType.TEXT_TO_VIDEO)


def missing_facts(metadata: ModelMetadata) -> list[str]:
    """What ``metadata`` lacks for ModelDeck to estimate it, each fact in words with how to add it; empty when
    nothing is missing. The first, when present, means no estimate can be made at all."""
    facts: list[str] = []
    arch = metadata.architecture
    if not metadata.parameter_count and metadata.estimation_architecture is None:
        facts.append("no parameter count or size: add `parameters` (the total from the model card) or scan its "
                     "weights with `modeldeck scan PATH`")
    if metadata.model_type in (ModelType.LLM, ModelType.SPEECH_TO_TEXT) and metadata.estimation_architecture is None:
        part = "KV cache" if metadata.model_type == ModelType.LLM else "decoder's KV cache"
        facts.append(f"no architecture (layers, KV heads, head size): the {part} cannot be estimated; read it from "
                     "its config.json with `modeldeck scan FOLDER`")
    if metadata.model_type in _PIPELINE_TYPES and not (arch and arch.components):
        facts.append("no parameter count per part (denoiser, text encoders, VAE): the pipeline is sized as one "
                     "block; read them from its diffusers folder with `modeldeck scan FOLDER`, or add "
                     "`architecture.components`")
    return facts
