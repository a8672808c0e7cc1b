"""The calibration store: what llama.cpp measured next to the estimate, kept safely and used to calibrate.

Real files in temporary folders (the data directory is the test's own, through XDG_DATA_HOME): record and
read back, atomic writes, bounds, damaged and hostile files moved aside in bounded time, processes recording
at once, ``apply`` (measured / corrected / estimated), and ``modeldeck calibration``.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import cli
from app.core import calibration as cal
from app.core.calibration import (
    Calibration,
    CalibrationError,
    CalibrationStore,
    calibrate,
    learn_corrections,
    predicted_from,
)
from app.core.estimation import EstimateTerm, MemoryEstimate
from app.core.units import GiB, MiB

ROOT = Path(__file__).resolve().parents[2]
POSIX = os.name == "posix"
GUIDE = "pip install 'modeldeck[llama]'"


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """The user data directory, as platformdirs finds it (XDG_DATA_HOME/modeldeck)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path / "xdg-data" / "modeldeck"


@pytest.fixture
def path(data_dir) -> Path:
    return data_dir / "calibration.json"


def entry(model: str = "llama-3.1-8b", level: str = "Q4_K_M", context: int = 8192, device: str = "cuda:0",
          *, measured: dict[str, int] | None = None, predicted: dict[str, int] | None = None,
          timestamp: float = 1_767_225_600.0) -> Calibration:
    return Calibration(
        model_id=model, level=level, context=context, device=device, timestamp=timestamp,
        predicted=predicted if predicted is not None else {"weights": 4 * GiB, "kv_cache": GiB, "compute": 500 * MiB,
                                                           "runtime": 457 * MiB},
        measured=measured if measured is not None else {"weights": 4 * GiB + 3 * MiB, "kv_cache": GiB,
                                                        "output": 2 * MiB, "compute": 520 * MiB, "runtime": 300 * MiB},
    )


def estimate(weights: int = 4 * GiB, kv: int = GiB, compute: int = 500 * MiB, overhead: int = 457 * MiB,
             approximate: bool = True) -> MemoryEstimate:
    return MemoryEstimate("Q4_K_M", EstimateTerm(weights, "w"), EstimateTerm(kv, "kv"), EstimateTerm(compute, "c"),
                          EstimateTerm(overhead, "o"), approximate=approximate)


def fill(path: Path, entries: list[Calibration]) -> None:
    """Write a valid file directly (faster than recording one by one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cal._write(path, entries)


def leftovers(path: Path) -> list[str]:
    """Everything in the folder but the file itself and its lock."""
    return sorted(p.name for p in path.parent.iterdir() if p.name not in (path.name, f".{path.name}.lock"))


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.bad-*"))


# ------------------------------------------------------------------------------------------------
# Entries and the file
# ------------------------------------------------------------------------------------------------


def test_default_path_is_in_the_user_data_directory(data_dir):
    assert CalibrationStore().path == data_dir / "calibration.json"


def test_record_and_read_back(path):
    one, two = entry(context=4096), entry(model="qwen2.5-7b", device="cpu", measured={"weights": 5 * GiB})
    store = CalibrationStore()
    assert store.entries() == [] and not path.parent.exists()  # reading creates nothing
    store.record(one)
    store.record(two)
    assert CalibrationStore(path).entries() == [one, two]
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["version"] == 1 and [e["model_id"] for e in doc["entries"]] == ["llama-3.1-8b", "qwen2.5-7b"]
    assert doc["entries"][0] == one.to_json()
    assert set(doc["entries"][0]) == {"model_id", "level", "context", "device", "runtime", "timestamp",
                                      "predicted", "measured"}
    assert len(path.read_text().splitlines()) == 4  # one entry a line
    assert leftovers(path) == []


def test_measured_for_is_the_newest_of_exactly_that_key(path):
    store = CalibrationStore(path)
    store.record(entry(measured={"weights": 1}))
    store.record(entry(measured={"weights": 2}))
    store.record(entry(device="cuda:1", measured={"weights": 3}))
    assert store.measured_for("llama-3.1-8b", "Q4_K_M", 8192, "cuda:0") == {"weights": 2}
    assert store.measured_for("llama-3.1-8b", "q4_k_m", 8192, "cuda:0") == {"weights": 2}  # level case ignored
    assert store.measured_for("llama-3.1-8b", "Q4_K_M", 8192) == {"weights": 3}  # any device: the newest
    assert store.measured_for("llama-3.1-8b", "Q4_K_M", 8191, "cuda:0") is None  # contexts match exactly
    assert store.measured_for("llama-3.1-8b", "Q8_0", 8192) is None
    assert store.measured_for("other", "Q4_K_M", 8192) is None


@pytest.mark.parametrize("change, words", [
    ({"context": -1}, "context"), ({"context": True}, "context"), ({"context": 8192.0}, "context"),
    ({"context": 1 << 31}, "context"), ({"model_id": ""}, "model_id"), ({"model_id": "a\x1b[31m"}, "model_id"),
    ({"model_id": "x" * 301}, "model_id"), ({"device": 0}, "device"), ({"level": "\ud800"}, "level"),
    ({"measured": {}}, "no figures"), ({"measured": {"weights": -1}}, "measured.weights"),
    ({"measured": {"weights": 1 << 51}}, "measured.weights"), ({"measured": {"weights": 10**5000}}, "bit number"),
    ({"measured": {"weights": 1.5}}, "measured.weights"), ({"predicted": {"vram": 1}}, "unknown category"),
    ({"predicted": [1, 2]}, "predicted"), ({"timestamp": float("nan")}, "timestamp"),
    ({"timestamp": float("inf")}, "timestamp"), ({"timestamp": -1}, "timestamp"), ({"runtime": None}, "runtime"),
])
def test_an_entry_is_checked_when_made(change, words):
    fields = entry().to_json() | change
    with pytest.raises(CalibrationError) as err:
        Calibration(**fields)
    message = str(err.value)
    assert words in message and "\n" not in message and len(message) < 200


def test_predicted_from_an_estimate_names_the_categories():
    assert predicted_from(estimate(1, 2, 3, 4)) == {"weights": 1, "kv_cache": 2, "compute": 3, "runtime": 4}


# ------------------------------------------------------------------------------------------------
# Atomic writes, bounds, the lock
# ------------------------------------------------------------------------------------------------


def test_an_interrupted_write_leaves_the_old_file(path, monkeypatch):
    store = CalibrationStore(path)
    store.record(entry(context=1))
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CalibrationError) as err:
        store.record(entry(context=2))
    monkeypatch.undo()
    assert "No space left on device" in str(err.value) and "unchanged" in str(err.value)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before
    assert leftovers(path) == []  # no temp file left behind
    assert [e.context for e in CalibrationStore(path).entries()] == [1]


def test_a_killed_writers_temp_file_is_removed_later(path):
    CalibrationStore(path).record(entry(context=1))
    stale = path.with_name(f".{path.name}.abcd_123.tmp")
    stale.write_text("half a write")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    CalibrationStore(path).record(entry(context=2))
    assert not stale.exists()


def test_the_501st_entry_drops_the_oldest(path):
    first = [entry(model=f"m{i}", timestamp=1_700_000_000 + i) for i in range(500)]
    fill(path, first)
    store = CalibrationStore(path)
    store.record(entry(model="m500"))
    kept = store.entries()
    assert len(kept) == 500 == cal.MAX_ENTRIES
    assert kept[0].model_id == "m1" and kept[-1].model_id == "m500"
    assert path.stat().st_size < 400 * 1024


def test_at_most_20_entries_for_one_key(path):
    store = CalibrationStore(path)
    store.record(entry(model="other"))
    for i in range(21):
        store.record(entry(measured={"weights": i}))
    kept = store.entries()
    mine = [e.measured["weights"] for e in kept if e.model_id == "llama-3.1-8b"]
    assert mine == list(range(1, 21))  # the oldest of the 21 went
    assert [e.model_id for e in kept].count("other") == 1
    other_key = CalibrationStore(path)
    other_key.record(entry(level="q4_k_m", measured={"weights": 99}))  # the same key: level case is ignored
    assert [e.measured["weights"] for e in other_key.entries() if e.model_id == "llama-3.1-8b"][0] == 2


def test_a_held_lock_is_one_line_and_reads_still_work(path):
    fcntl = pytest.importorskip("fcntl")
    store = CalibrationStore(path, lock_timeout=0.2)
    store.record(entry())
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = time.monotonic()
        with pytest.raises(CalibrationError) as err:
            store.record(entry(context=1))
        assert time.monotonic() - start < 5
        assert "another ModelDeck process" in str(err.value) and "\n" not in str(err.value)
        assert len(store.entries()) == 1
    finally:
        os.close(fd)
    store.record(entry(context=1))
    assert len(store.entries()) == 2


def _record_many(path: str, worker: int, count: int, barrier) -> None:
    store = CalibrationStore(path)
    barrier.wait()
    for i in range(count):
        store.record(entry(model=f"w{worker}", context=i))


def test_processes_recording_at_once_lose_nothing(path):
    path.parent.mkdir(parents=True)
    ctx = multiprocessing.get_context("spawn")
    workers, count = 4, 25
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_record_many, args=(str(path), w, count, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = {(e.model_id, e.context) for e in CalibrationStore(path).entries()}
    assert got == {(f"w{w}", i) for w in range(workers) for i in range(count)}
    assert leftovers(path) == []


# ------------------------------------------------------------------------------------------------
# Damaged, unreadable and hostile files
# ------------------------------------------------------------------------------------------------


def test_a_damaged_file_is_moved_aside_with_one_warning(path, caplog):
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"version": 1, "entries": [')
    store = CalibrationStore(path)
    with caplog.at_level(logging.WARNING, logger="app.core.calibration"):
        assert store.entries() == []
        assert store.entries() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "not valid JSON" in warnings[0] and ".bad-" in warnings[0]
    [backup] = backups(path)
    assert backup.read_bytes() == b'{"version": 1, "entries": [' and not path.exists()
    store.record(entry())
    assert len(store.entries()) == 1 and backups(path) == [backup]


def test_invalid_entries_are_moved_aside_and_the_valid_ones_kept(path, caplog):
    good = entry()
    path.parent.mkdir(parents=True)
    doc = {"version": 1, "entries": [good.to_json(), {**good.to_json(), "context": -5}]}
    original = json.dumps(doc)
    path.write_text(original)
    with caplog.at_level(logging.WARNING, logger="app.core.calibration"):
        assert CalibrationStore(path).entries() == [good]
    assert "1 of 2 entries are invalid (entry 1: context" in caplog.text
    assert [b.read_text() for b in backups(path)] == [original]
    assert CalibrationStore(path).entries() == [good]  # written back: no second warning, no second backup
    assert len(backups(path)) == 1


def test_recording_over_a_damaged_file_keeps_it_as_a_backup(path):
    path.parent.mkdir(parents=True)
    path.write_text("not json at all")
    CalibrationStore(path).record(entry())
    assert [b.read_text() for b in backups(path)] == ["not json at all"]
    assert CalibrationStore(path).entries() == [entry()]


def test_two_backups_in_one_second_do_not_replace_each_other(path):
    path.parent.mkdir(parents=True)
    for text in ("first", "second"):
        path.write_text(text)
        assert CalibrationStore(path).entries() == []
    assert sorted(b.read_text() for b in backups(path)) == ["first", "second"]


def test_an_unreadable_file_is_moved_aside(path, monkeypatch, caplog):
    """Permission denied on open (the tests may run as root, where chmod 000 does not stop reading)."""
    CalibrationStore(path).record(entry())
    before = path.read_bytes()
    real_open = os.open

    def refuse(file, flags, *args, **kwargs):
        if os.fspath(file) == str(path) and not flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with caplog.at_level(logging.WARNING, logger="app.core.calibration"):
        assert CalibrationStore(path).entries() == []
    monkeypatch.undo()
    assert "Permission denied" in caplog.text
    assert [b.read_bytes() for b in backups(path)] == [before]


def test_a_newer_file_is_left_alone_and_not_replaced(path, caplog):
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 2, "entries": [], "new": true}')
    store = CalibrationStore(path)
    with caplog.at_level(logging.WARNING, logger="app.core.calibration"):
        assert store.entries() == []
    assert "newer ModelDeck" in caplog.text
    with pytest.raises(CalibrationError) as err:
        store.record(entry())
    assert "newer ModelDeck" in str(err.value) and "nothing was recorded" in str(err.value)
    assert path.read_text() == '{"version": 2, "entries": [], "new": true}' and backups(path) == []


HOSTILE = {
    "deep nesting": b"[" * 200_000 + b"]" * 200_000,
    "deep nesting in an entry": b'{"version": 1, "entries": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    "a 5000-digit number": b'{"version": 1, "entries": [], "x": ' + b"9" * 5000 + b"}",
    "a 4000-digit figure": json.dumps({"version": 1, "entries": [
        {**entry().to_json(), "measured": {"weights": 10**3999}}]}).encode(),
    "NaN and Infinity": json.dumps({"version": 1, "entries": [
        {**entry().to_json(), "timestamp": float("nan"), "context": float("inf")}]}).encode(),
    "wrong types": json.dumps({"version": 1, "entries": [
        {**entry().to_json(), "predicted": "lots", "measured": [1, 2]}]}).encode(),
    "booleans as numbers": json.dumps({"version": True, "entries": []}).encode(),
    "a lone surrogate": b'{"version": 1, "entries": [{"model_id": "\\ud800"}]}',
    "control characters": json.dumps({"version": 1, "entries": [
        {**entry().to_json(), "model_id": "\x1b]0;owned\x07"}]}).encode(),
    "unknown fields": json.dumps({"version": 1, "entries": [{**entry().to_json(), "extra": 1}]}).encode(),
    "not UTF-8": b'{"version": 1, "entries": ["\xff\xfe"]}',
    "a list": b"[]",
    "too many entries": json.dumps({"version": 1, "entries": [{}] * (cal.MAX_FILE_ENTRIES + 1)}).encode(),
    "a million tiny entries": b'{"version": 1, "entries": [' + b"0," * 1_000_000 + b"0]}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_contents_are_one_line_in_bounded_time(path, caplog, name):
    path.parent.mkdir(parents=True)
    path.write_bytes(HOSTILE[name])
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="app.core.calibration"):
        assert CalibrationStore(path).entries() == []
    assert time.monotonic() - start < 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "\n" not in warnings[0] and len(warnings[0]) < 500 and "\x1b" not in warnings[0]
    assert [b.read_bytes() for b in backups(path)] == [HOSTILE[name]]


def test_a_1_gb_file_is_not_read(path, caplog):
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        f.truncate(1 << 30)  # sparse: no gigabyte written
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="app.core.calibration"):
        assert CalibrationStore(path).entries() == []
    assert time.monotonic() - start < 2
    assert "1,024 MiB" in caplog.text
    [backup] = backups(path)
    assert backup.stat().st_size == 1 << 30


def test_a_folder_at_the_path_is_moved_aside(path):
    path.mkdir(parents=True)
    (path / "inside").write_text("kept")
    store = CalibrationStore(path)
    assert store.entries() == []
    store.record(entry())
    [backup] = backups(path)
    assert (backup / "inside").read_text() == "kept" and store.entries() == [entry()]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_FIELD_VALUES = {
    "model_id": st.text(max_size=320) | _JSON,
    "level": st.sampled_from(["Q4_K_M", "fp16", ""]) | _JSON,
    "context": st.integers(-10, 1 << 31) | _JSON,
    "device": st.sampled_from(["cuda:0", "cpu"]) | _JSON,
    "runtime": st.just("llama.cpp") | _JSON,
    "timestamp": st.floats() | st.integers(-10, 1 << 40) | _JSON,
    "predicted": st.dictionaries(st.sampled_from([*cal.CATEGORIES, "vram"]),
                                 st.integers(-5, 1 << 52) | _JSON, max_size=6) | _JSON,
    "measured": st.dictionaries(st.sampled_from([*cal.CATEGORIES, "vram"]),
                                st.integers(-5, 1 << 52) | _JSON, max_size=6) | _JSON,
    "extra": _JSON,
}
_ENTRY = st.fixed_dictionaries({}, optional=_FIELD_VALUES) | st.builds(lambda e: e.to_json(), st.builds(
    entry, context=st.integers(0, 1 << 20), model=st.text(min_size=1, max_size=20).filter(
        lambda s: not cal._UNPRINTABLE.search(s))))
_DOCUMENT = (
    st.fixed_dictionaries({"version": st.sampled_from([1, 1, 1, 0, 2, "1", True, None]),
                           "entries": st.lists(_ENTRY, max_size=6)})
    | _JSON
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCUMENT, raw=st.none() | st.binary(max_size=200))
def test_property_any_file_reads_safely(tmp_path_factory, doc, raw):
    """Random JSON (or bytes): reading never raises, takes bounded time, returns only valid entries, and a
    file that is not read as it is is either kept as a backup or (a newer version) left in place."""
    path = tmp_path_factory.mktemp("prop") / "calibration.json"
    data = raw if raw is not None else json.dumps(doc).encode()
    path.write_bytes(data)
    store = CalibrationStore(path)
    start = time.monotonic()
    got = store.entries()
    assert time.monotonic() - start < 5
    assert all(Calibration.from_json(e.to_json()) == e for e in got)
    assert len(store.problems) <= 1 and all("\n" not in p for p in store.problems)
    if store.problems and "newer ModelDeck" not in store.problems[0]:
        assert [b.read_bytes() for b in backups(path)] == [data]
    else:
        assert path.read_bytes() == data
    try:
        store.record(entry())
    except CalibrationError as err:
        assert "newer ModelDeck" in str(err)
    else:
        assert store.entries()[-1] == entry()


# ------------------------------------------------------------------------------------------------
# Corrections and apply
# ------------------------------------------------------------------------------------------------


def ratios(*weights_ratios: float, model: str = "m") -> list[Calibration]:
    return [entry(model=f"{model}{i}", predicted={"weights": 1000, "compute": 0},
                  measured={"weights": round(1000 * r), "compute": 77}) for i, r in enumerate(weights_ratios)]


def test_corrections_are_the_clamped_median_of_recent_loads():
    c = learn_corrections(ratios(1.0, 1.1, 1.2))
    assert c["weights"].factor == pytest.approx(1.1) and c["weights"].loads == 3 and c["weights"].usable
    assert "compute" not in c  # zero predictions are ignored
    assert learn_corrections(ratios(3.0, 4.0, 5.0))["weights"].factor == 2.0
    low = learn_corrections(ratios(0.1, 0.2, 0.3))["weights"]
    assert low.factor == 0.5 and low.median == pytest.approx(0.2)
    recent = learn_corrections(ratios(*[2.0] * 10, *[1.0] * 5), recent=5)["weights"]
    assert recent.factor == 1.0 and recent.loads == 5
    assert learn_corrections([]) == {}


def test_corrections_map_categories_to_the_estimate_terms(path):
    store = CalibrationStore(path)
    for i in range(3):
        store.record(entry(context=i, predicted={"compute": 100, "runtime": 400},
                           measured={"output": 10, "compute": 100, "runtime": 200}))
    c = store.corrections()
    assert c["compute"].factor == pytest.approx(1.1) and c["overhead"].factor == 0.5
    assert set(c) == {"compute", "overhead"}


def test_apply_uses_the_measured_figures_of_that_exact_load(path):
    store = CalibrationStore(path)
    store.record(entry(timestamp=time.mktime((2026, 3, 4, 12, 0, 0, 0, 0, -1)),
                       measured={"weights": 5 * GiB, "kv_cache": 2 * GiB, "output": MiB, "compute": 99 * MiB}))
    est = estimate()
    got, how = store.apply(est, "llama-3.1-8b", "Q4_K_M", 8192, "cuda:0")
    assert how == "measured"
    assert got.weights.bytes == 5 * GiB and got.kv_cache.bytes == 2 * GiB and got.compute.bytes == 100 * MiB
    assert got.weights.explanation.startswith("measured by llama.cpp on 2026-03-04")
    assert got.overhead == est.overhead  # not measured: as estimated
    assert got.approximate  # one term is still an estimate
    assert got.total_bytes == 5 * GiB + 2 * GiB + 100 * MiB + 457 * MiB
    assert any("measured by llama.cpp" in n for n in got.notes)


def test_apply_with_every_term_measured_is_not_approximate(path):
    store = CalibrationStore(path)
    store.record(entry())
    got, how = store.apply(estimate(), "llama-3.1-8b", "Q4_K_M", 8192, "cuda:0")
    assert how == "measured" and not got.approximate
    assert got.overhead.bytes == 300 * MiB and got.compute.bytes == 522 * MiB


def test_apply_corrects_with_three_loads_and_leaves_fewer_alone(path):
    store = CalibrationStore(path)
    est = estimate()
    for i in range(2):
        store.record(entry(model=f"other{i}", predicted={"weights": 100}, measured={"weights": 107}))
    got, how = store.apply(est, "llama-3.1-8b", "Q4_K_M", 8192, "cuda:0")
    assert (got, how) == (est, "estimated")
    store.record(entry(model="other2", predicted={"weights": 100}, measured={"weights": 107}))
    got, how = store.apply(est, "llama-3.1-8b", "Q4_K_M", 8192, "cuda:0")
    assert how == "corrected"
    assert got.weights.bytes == round(4 * GiB * 1.07)
    assert got.weights.explanation == "w × 1.07 learned from 3 loads"
    assert got.kv_cache == est.kv_cache and got.compute == est.compute and got.overhead == est.overhead
    # A measurement on another device or context is not this load: corrected, not measured.
    assert store.apply(est, "other0", "Q4_K_M", 8192, "cpu")[1] == "corrected"
    assert store.apply(est, "other0", "Q4_K_M", 4096, "cuda:0")[1] == "corrected"
    assert store.apply(est, "other0", "Q4_K_M", 8192, "cuda:0")[1] == "measured"


def test_apply_is_a_pure_function_of_the_entries():
    entries = ratios(1.5, 1.5, 1.5)
    est = estimate()
    assert calibrate(entries, est, "x", "Q4_K_M", 8192, "cuda:0")[1] == "corrected"
    assert calibrate([], est, "x", "Q4_K_M", 8192, "cuda:0") == (est, "estimated")
    other_runtime = [Calibration(**{**e.to_json(), "runtime": "vllm"}) for e in entries]
    assert calibrate(other_runtime, est, "x", "Q4_K_M", 8192, "cuda:0") == (est, "estimated")


# ------------------------------------------------------------------------------------------------
# modeldeck calibration
# ------------------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["calibration", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_empty_store_says_how_entries_appear(path, capsys):
    code, out, err = run_cli(capsys)
    assert code == 0 and err == ""
    assert out.count("\n") == 1 and GUIDE in out and "llama.cpp" in out
    code, out, _ = run_cli(capsys, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["entries"] == [] and GUIDE in doc["note"] and doc["corrections"] == {}
    assert not path.parent.exists()


def test_cli_table_and_summary(path, capsys):
    store = CalibrationStore(path)
    for i in range(3):
        store.record(entry(context=1024 * (i + 1)))
    store.record(entry(model="qwen2.5-7b", predicted={"weights": GiB}, measured={"weights": GiB // 2}))
    code, out, err = run_cli(capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("4 loads measured") and str(path) in lines[0]
    header = next(line for line in lines if line.startswith("MODEL"))
    for column in ("LEVEL", "CONTEXT", "DEVICE", "TERM", "PREDICTED", "MEASURED", "ERROR"):
        assert column in header
    row = next(line for line in lines if line.startswith("qwen2.5-7b"))
    assert "1.00 GiB" in row and "512 MiB" in row and "-50.0%" in row
    assert any("overhead" in line and "457 MiB" in line and "300 MiB" in line and "-34.4%" in line for line in lines)
    summary = lines[lines.index(next(line for line in lines if line.startswith("TERM"))):]
    assert any(line.startswith("overhead") and "× 0.66 from 3 loads" in line for line in summary)
    assert any(line.startswith("weights") and "-50.0%" in line for line in summary)  # worst
    assert "Traceback" not in out


def test_cli_json_is_a_stable_document(path, capsys):
    store = CalibrationStore(path)
    store.record(entry())
    code, out, _ = run_cli(capsys, "--json")
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert code == 0
    assert set(doc) == {"version", "path", "model", "entries", "summary", "corrections", "min_loads", "note"}
    assert doc["version"] == 1 and doc["path"] == str(path) and doc["note"] is None and doc["min_loads"] == 3
    [e] = doc["entries"]
    assert set(e) == {"model_id", "level", "context", "device", "runtime", "timestamp", "date", "predicted",
                      "measured", "terms"}
    assert set(e["terms"]) == set(doc["summary"]) == {"weights", "kv_cache", "compute", "overhead"}
    assert e["terms"]["compute"] == {"predicted_bytes": 500 * MiB, "measured_bytes": 522 * MiB,
                                     "error": round(522 / 500 - 1, 4)}
    assert doc["summary"]["overhead"] == {"loads": 1, "median_error": round(300 / 457 - 1, 4),
                                          "worst_error": round(300 / 457 - 1, 4)}
    assert doc["corrections"]["overhead"]["loads"] == 1 and doc["corrections"]["overhead"]["applied"] is False


def test_cli_model_filter_and_clear(path, capsys):
    store = CalibrationStore(path)
    store.record(entry(model="qwen2.5-7b"))
    store.record(entry(model="qwen2.5-14b"))
    store.record(entry(model="llama-3.1-8b"))
    _, out, _ = run_cli(capsys, "--json", "--model", "QWEN")
    assert [e["model_id"] for e in json.loads(out)["entries"]] == ["qwen2.5-7b", "qwen2.5-14b"]
    _, out, _ = run_cli(capsys, "--model", "mistral")
    assert out.count("\n") == 1 and "no calibration entries for 'mistral'" in out
    code, out, _ = run_cli(capsys, "--clear", "--model", "qwen2.5-7b")
    assert code == 0 and out == f"removed 1 calibration entry of 'qwen2.5-7b' from {path}\n"
    code, out, _ = run_cli(capsys, "--clear", "--json")
    assert code == 0 and json.loads(out) == {"version": 1, "path": str(path), "removed": 2}
    assert store.entries() == []
    code, out, _ = run_cli(capsys, "--clear")
    assert code == 0 and out.startswith("removed 0 calibration entries")


def test_clear_in_a_read_only_data_dir_is_one_line(path, capsys, monkeypatch):
    """A read-only file system (EROFS on every write in the folder): one line, exit 1, file unchanged."""
    CalibrationStore(path).record(entry())
    before = path.read_bytes()
    real_open = os.open

    def read_only(file, flags, *args, **kwargs):
        if Path(os.fspath(file)).parent == path.parent and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    code, out, err = run_cli(capsys, "--clear")
    assert code == cli.EXIT_FAILURE and out == ""
    assert err.count("\n") == 1 and "Read-only file system" in err and "Traceback" not in err
    with pytest.raises(CalibrationError):
        CalibrationStore(path).record(entry(context=1))
    code, out, err = run_cli(capsys)  # reading still works
    assert code == 0 and "1 load measured" in out
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_an_unwritable_data_dir_is_one_line_for_real(tmp_path):
    """The data directory cannot be made (a file is in its place): a real subprocess, no traceback."""
    (tmp_path / "xdg").mkdir()
    (tmp_path / "xdg" / "modeldeck").write_text("a file, not a folder")
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "app", "calibration", "--clear"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("modeldeck: error: calibration data")
    assert "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "app", "calibration"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0 and GUIDE in out.stdout and out.stderr == ""


@pytest.mark.skipif(not POSIX or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_a_read_only_data_dir_for_real(path, capsys):
    CalibrationStore(path).record(entry())
    os.chmod(path.parent, 0o555)
    try:
        code, _, err = run_cli(capsys, "--clear")
        assert code == cli.EXIT_FAILURE and err.count("\n") == 1 and "Traceback" not in err
    finally:
        os.chmod(path.parent, 0o755)


def test_a_damaged_file_warns_once_through_the_cli(path):
    path.parent.mkdir(parents=True)
    path.write_text("{broken")
    env = dict(os.environ, XDG_DATA_HOME=str(path.parent.parent), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "app", "calibration"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0 and GUIDE in out.stdout
    assert out.stderr.count("\n") == 1 and "WARNING" in out.stderr and ".bad-" in out.stderr

