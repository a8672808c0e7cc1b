"""The user's model list survives other processes, odd files, permissions and kills.

Each test is a failure found by probing the store: a second process (``modeldeck scan`` while the
dashboard is open) saving at the same time, unreadable / read-only / huge / malformed files, backups
that overwrote each other, orphan temp files, and saves killed half way.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.core import model_registry
from app.core.model_registry import ModelMetadata, ModelProvider, ModelRegistry, ModelType, RegistryError

ROOT = Path(__file__).resolve().parents[2]
POSIX = os.name == "posix"


def entry(hf_id: str, **kw) -> ModelMetadata:
    data = dict(name=hf_id.split("/")[-1], provider=ModelProvider.LLAMA, model_type=ModelType.LLM, size_gb=8.0,
                huggingface_id=hf_id)
    data.update(kw)
    return ModelMetadata(**data)


def on_disk(path: Path) -> list[str]:
    return [m["huggingface_id"] for m in json.loads(path.read_text(encoding="utf-8"))["models"]]


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "data" / "models.json"


def write_doc(path: Path, models=(), **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": 1, "models": [m.model_dump(mode="json", exclude_none=True) for m in models], **extra}
    path.write_text(json.dumps(doc), encoding="utf-8")


def leftovers(path: Path) -> list[str]:
    """Everything in the folder except the model list itself."""
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


CHILD_PRELUDE = """
import sys
from app.core.model_registry import ModelMetadata, ModelRegistry
def entry(hf_id):
    return ModelMetadata(name=hf_id.split("/")[-1], provider="llama", model_type="llm", size_gb=8.0,
                         huggingface_id=hf_id)
"""


# ------------------------------------------------------------------------------------------------
# 1. Two processes saving the same file
# ------------------------------------------------------------------------------------------------


def test_two_registries_on_one_file_keep_each_others_models(store_path):
    dashboard = ModelRegistry(user_store=store_path, include_builtin=False)
    scan = ModelRegistry(user_store=store_path, include_builtin=False)
    scan.register_model(entry("scan/found-1"))
    dashboard.register_model(entry("dash/added"))  # the dashboard never saw scan/found-1
    scan.register_model(entry("scan/found-2"))
    assert sorted(on_disk(store_path)) == ["dash/added", "scan/found-1", "scan/found-2"]
    # The registry that saved last also knows what the other one added.
    assert scan.get_model("dash/added") is not None
    assert dashboard.get_model("scan/found-1") is not None
    assert sorted(m.id for m in ModelRegistry(user_store=store_path, include_builtin=False).user_models()) == [
        "dash/added", "scan/found-1", "scan/found-2"]


def test_a_removal_by_one_process_is_respected_by_the_other(store_path):
    write_doc(store_path, [entry("a/keep"), entry("a/gone"), entry("a/edited")])
    one = ModelRegistry(user_store=store_path, include_builtin=False)
    two = ModelRegistry(user_store=store_path, include_builtin=False)
    one.remove_model("a/gone")
    one.update_model("a/edited", size_gb=9.0)
    two.register_model(entry("b/new"))  # two still holds the old a/gone and a/edited in memory
    assert sorted(on_disk(store_path)) == ["a/edited", "a/keep", "b/new"]
    assert two.get_model("a/gone") is None  # and forgets it after saving
    assert two.get_model("a/edited").size_gb == 9.0
    saved = {m["huggingface_id"]: m for m in json.loads(store_path.read_text())["models"]}
    assert saved["a/edited"]["size_gb"] == 9.0


def test_removing_a_user_override_brings_the_builtin_back(store_path):
    r = ModelRegistry(user_store=store_path)
    builtin = r.get_model("meta-llama/Llama-3.1-8B-Instruct")
    r.update_model(builtin.id, recommended_vram_gb=99.0)
    assert r.get_model(builtin.id).origin == "user"
    r.remove_model(builtin.id)
    assert r.get_model(builtin.id) is builtin


def test_a_second_process_registers_while_the_dashboard_is_open(store_path):
    write_doc(store_path, [entry("old/one"), entry("old/two")])
    dashboard = ModelRegistry(user_store=store_path)
    out = run_child(CHILD_PRELUDE + textwrap.dedent("""
        r = ModelRegistry(user_store=sys.argv[1])
        r.register_model(entry("scan/from-cli"))
        r.remove_model("old/two")
    """), str(store_path))
    assert out.returncode == 0, out.stderr
    dashboard.register_model(entry("dash/from-ui"))
    assert sorted(on_disk(store_path)) == ["dash/from-ui", "old/one", "scan/from-cli"]
    assert dashboard.get_model("scan/from-cli") is not None and dashboard.get_model("old/two") is None


def test_processes_saving_at_the_same_time_lose_nothing(store_path):
    store_path.parent.mkdir(parents=True)
    code = CHILD_PRELUDE + textwrap.dedent("""
        r = ModelRegistry(user_store=sys.argv[1], include_builtin=False)
        for i in range(25):
            r.register_model(entry(f"{sys.argv[2]}/m{i}"))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children = [subprocess.Popen([sys.executable, "-c", code, str(store_path), f"p{n}"], cwd=ROOT, env=env,
                                 stderr=subprocess.PIPE, text=True) for n in range(3)]
    mine = ModelRegistry(user_store=store_path, include_builtin=False)
    for i in range(25):
        mine.register_model(entry(f"me/m{i}"))
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    expected = {f"{who}/m{i}" for who in ("p0", "p1", "p2", "me") for i in range(25)}
    assert set(on_disk(store_path)) == expected
    assert len(on_disk(store_path)) == len(expected)
    assert leftovers(store_path) == []  # no lock or temp file left behind


def test_a_held_lock_times_out_with_a_message_naming_the_file(store_path):
    write_doc(store_path, [entry("a/one")])
    holder = model_registry.UserModelStore(store_path)
    waiter = ModelRegistry(user_store=model_registry.UserModelStore(store_path, lock_timeout=0.3),
                           include_builtin=False)
    with holder.lock():
        started = time.monotonic()
        with pytest.raises(RegistryError) as err:
            waiter.register_model(entry("b/two"))
        assert time.monotonic() - started < 5
    assert str(store_path) in str(err.value) and "another" in str(err.value)
    assert waiter.get_model("b/two") is None  # a refused save changes nothing in memory either
    assert on_disk(store_path) == ["a/one"]
    waiter.register_model(entry("b/two"))
    assert on_disk(store_path) == ["a/one", "b/two"]


# ------------------------------------------------------------------------------------------------
# 2. Unreadable is not corrupt
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def deny_reading(monkeypatch):
    """Make one path unreadable (the tests run as root, where chmod 000 does not stop reading)."""
    denied: set[str] = set()
    real_os_open, real_io_open = os.open, io.open

    def refuse(path):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))

    def os_open(path, flags, *a, **kw):
        if not flags & (os.O_WRONLY | os.O_RDWR):
            refuse(path)
        return real_os_open(path, flags, *a, **kw)

    def io_open(file, mode="r", *a, **kw):
        if "r" in mode and "+" not in mode:
            refuse(file)
        return real_io_open(file, mode, *a, **kw)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr(builtins, "open", io_open)
    return lambda p: denied.add(os.fspath(p))


def check_unreadable_is_left_alone(store_path: Path) -> None:
    r = ModelRegistry(user_store=store_path)
    assert len(r.models) >= 40  # built-ins still load
    assert len(r.problems) == 1 and str(store_path) in r.problems[0]
    assert "cannot be read" in r.problems[0] and "permission" in r.problems[0].lower()
    assert leftovers(store_path) == []  # not moved aside as "corrupt"
    with pytest.raises(RegistryError) as err:
        r.register_model(entry("new/model"))
    assert str(store_path) in str(err.value) and "cannot be read" in str(err.value)
    assert r.get_model("new/model") is None
    assert store_path.exists() and leftovers(store_path) == []


def test_an_unreadable_file_is_reported_and_never_replaced(store_path, deny_reading, monkeypatch):
    write_doc(store_path, [entry("mine/precious")])
    before = store_path.read_bytes()
    deny_reading(store_path)
    check_unreadable_is_left_alone(store_path)
    monkeypatch.undo()
    assert store_path.read_bytes() == before


@pytest.mark.skipif(not POSIX or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_an_unreadable_file_for_real(store_path):
    write_doc(store_path, [entry("mine/precious")])
    before = store_path.read_bytes()
    os.chmod(store_path, 0)
    check_unreadable_is_left_alone(store_path)
    os.chmod(store_path, 0o600)
    assert store_path.read_bytes() == before


def test_once_readable_again_the_models_come_back_and_are_kept(store_path, deny_reading, monkeypatch):
    write_doc(store_path, [entry("mine/precious")])
    deny_reading(store_path)
    r = ModelRegistry(user_store=store_path, include_builtin=False)
    monkeypatch.undo()  # the user fixed the permissions; the dashboard is still open
    r.register_model(entry("new/model"))
    assert on_disk(store_path) == ["mine/precious", "new/model"]


# ------------------------------------------------------------------------------------------------
# 3. Backups never overwrite each other
# ------------------------------------------------------------------------------------------------


def test_corrupt_files_within_one_second_get_separate_backups(store_path):
    store_path.parent.mkdir(parents=True)
    for text in ("{ first broken", "{ second broken", "{ third broken"):
        store_path.write_text(text)
        r = ModelRegistry(user_store=store_path, include_builtin=False)
        assert len(r.problems) == 1
    backups = sorted(store_path.parent.glob("models.json.corrupt-*"))
    assert sorted(b.read_text() for b in backups) == ["{ first broken", "{ second broken", "{ third broken"]
    assert not store_path.exists()


def test_a_corrupt_file_is_moved_aside_only_under_the_lock(store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text("{ broken")
    holder = model_registry.UserModelStore(store_path)
    with holder.lock():  # another process is saving (or stuck): loading does not wait forever
        r = ModelRegistry(user_store=model_registry.UserModelStore(store_path, lock_timeout=0.2),
                          include_builtin=False)
        assert len(r.problems) == 1 and "left in place" in r.problems[0]
        assert store_path.read_text() == "{ broken" and not list(store_path.parent.glob("models.json.corrupt-*"))
    r.register_model(entry("a/one"))  # the save, holding the lock, keeps the broken file as a backup
    backups = list(store_path.parent.glob("models.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == "{ broken"
    assert on_disk(store_path) == ["a/one"]


# ------------------------------------------------------------------------------------------------
# 4. Orphan temp files
# ------------------------------------------------------------------------------------------------


def test_stale_temp_files_of_ours_are_cleaned_and_nothing_else(store_path):
    write_doc(store_path, [entry("a/one")])
    folder = store_path.parent
    old = time.time() - 3600
    stale = [folder / ".models.json.abcd1234.tmp", folder / ".models.json.x_y_z_09.tmp"]
    fresh = folder / ".models.json.fresh123.tmp"  # a save that may still be in progress
    others = [folder / "other.tmp", folder / ".models.json.toolongname.tmp", folder / ".models.json.abcd1234.tmp.keep",
              folder / ".other.json.abcd1234.tmp", folder / "models.json.corrupt-20240101-000000",
              folder / ".MODELS.json.abcd1234.tmp", folder / "notes.txt"]
    for p in [*stale, fresh, *others]:
        p.write_text("x" * 1000)
        if p is not fresh:
            os.utime(p, (old, old))
    (folder / ".models.json.dirdir12.tmp").mkdir()  # matches the name but is a folder: left alone
    os.utime(folder / ".models.json.dirdir12.tmp", (old, old))
    r = ModelRegistry(user_store=store_path, include_builtin=False)
    assert r.get_model("a/one") is not None
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in others) and (folder / ".models.json.dirdir12.tmp").is_dir()


# ------------------------------------------------------------------------------------------------
# 5. Permissions are kept
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_a_read_only_file_is_never_overwritten(store_path):
    write_doc(store_path, [entry("mine/pinned")])
    os.chmod(store_path, 0o444)
    before = store_path.read_bytes()
    r = ModelRegistry(user_store=store_path)
    assert r.get_model("mine/pinned") is not None  # read-only still loads
    assert len(r.problems) == 1 and "read-only" in r.problems[0] and str(store_path) in r.problems[0]
    with pytest.raises(RegistryError) as err:
        r.register_model(entry("new/model"))
    assert "read-only" in str(err.value) and str(store_path) in str(err.value) and "chmod" in str(err.value)
    with pytest.raises(RegistryError):
        r.remove_model("mine/pinned")
    assert r.get_model("new/model") is None and r.get_model("mine/pinned") is not None
    assert store_path.read_bytes() == before
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o444
    assert leftovers(store_path) == []


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_once_made_writable_saves_work_and_the_problem_goes(store_path):
    write_doc(store_path, [entry("mine/pinned")])
    os.chmod(store_path, 0o444)
    r = ModelRegistry(user_store=store_path, include_builtin=False)
    with pytest.raises(RegistryError):
        r.register_model(entry("new/model"))
    assert len(r.problems) == 1
    os.chmod(store_path, 0o644)
    r.register_model(entry("new/model"))
    assert on_disk(store_path) == ["mine/pinned", "new/model"] and r.problems == []
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o644


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_a_save_keeps_the_files_mode(store_path, mode):
    write_doc(store_path, [entry("a/one")])
    os.chmod(store_path, mode)
    ModelRegistry(user_store=store_path, include_builtin=False).register_model(entry("b/two"))
    assert on_disk(store_path) == ["a/one", "b/two"]
    assert stat.S_IMODE(store_path.stat().st_mode) == mode


# ------------------------------------------------------------------------------------------------
# 6-7. Odd contents: one problem line, built-ins load, nothing lost or overwritten
# ------------------------------------------------------------------------------------------------


def test_an_invalid_field_that_is_not_a_list_keeps_the_models(store_path):
    write_doc(store_path, [entry("a/one")], invalid=5)
    r = ModelRegistry(user_store=store_path)
    assert len(r.models) >= 40 and r.get_model("a/one") is not None
    assert len(r.problems) == 1 and "'invalid'" in r.problems[0] and str(store_path) in r.problems[0]
    r.register_model(entry("b/two"))
    doc = json.loads(store_path.read_text())
    assert [m["huggingface_id"] for m in doc["models"]] == ["a/one", "b/two"] and doc["invalid"] == [5]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested"),
        (b'{"version": 1, "models": [' + b"[" * 500 + b"]" * 500 + b"]}", "nested"),
        (b'{"version": 1, "models": [{"name": "caf\xe9"}]}', "UTF-8"),
        (b"\xff\xfe\x00\x00", "UTF-8"),
    ],
    ids=["deep-200000", "deep-500", "latin-1", "garbage"],
)
def test_unparseable_contents_are_kept_aside_once(store_path, content, words):
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(content)
    r = ModelRegistry(user_store=store_path)
    assert len(r.models) >= 40
    assert len(r.problems) == 1 and words in r.problems[0] and str(store_path) in r.problems[0]
    backups = list(store_path.parent.glob("models.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == content
    r.register_model(entry("b/two"))  # saving afresh is allowed and leaves the backup alone
    assert on_disk(store_path) == ["b/two"] and backups[0].read_bytes() == content


def test_a_folder_at_the_path_is_reported_and_left_alone(store_path):
    store_path.mkdir(parents=True)
    (store_path / "inside.txt").write_text("user data")
    r = ModelRegistry(user_store=store_path)
    assert len(r.models) >= 40
    assert len(r.problems) == 1 and "folder" in r.problems[0] and str(store_path) in r.problems[0]
    with pytest.raises(RegistryError, match="folder"):
        r.register_model(entry("b/two"))
    assert (store_path / "inside.txt").read_text() == "user data"
    assert leftovers(store_path) == []


def test_a_huge_file_is_not_read_and_not_replaced(store_path):
    store_path.parent.mkdir(parents=True)
    with open(store_path, "wb") as fh:
        fh.truncate(65 * 1024 * 1024)  # sparse: costs no disk
    r = ModelRegistry(user_store=store_path)
    assert len(r.models) >= 40
    assert len(r.problems) == 1 and "64 MiB" in r.problems[0] and str(store_path) in r.problems[0]
    with pytest.raises(RegistryError, match="64 MiB"):
        r.register_model(entry("b/two"))
    assert store_path.stat().st_size == 65 * 1024 * 1024 and leftovers(store_path) == []


def test_a_file_grown_past_the_limit_while_open_is_not_replaced(store_path, monkeypatch):
    write_doc(store_path, [entry("a/one")])
    r = ModelRegistry(user_store=store_path, include_builtin=False)
    monkeypatch.setattr(model_registry, "MAX_USER_FILE_BYTES", 50)
    with pytest.raises(RegistryError, match="limit"):
        r.register_model(entry("b/two"))
    assert on_disk(store_path) == ["a/one"]


def test_a_newer_file_written_while_open_is_not_replaced(store_path):
    write_doc(store_path, [entry("a/one")])
    r = ModelRegistry(user_store=store_path, include_builtin=False)
    newer = json.dumps({"version": 99, "models": [], "future": True})
    store_path.write_text(newer)
    with pytest.raises(RegistryError, match="newer"):
        r.register_model(entry("b/two"))
    assert store_path.read_text() == newer


def test_a_file_corrupted_while_open_is_kept_aside_and_the_list_rewritten(store_path):
    write_doc(store_path, [entry("a/one")])
    r = ModelRegistry(user_store=store_path, include_builtin=False)
    store_path.write_text("{ broken by hand")
    r.register_model(entry("b/two"))
    assert on_disk(store_path) == ["a/one", "b/two"]  # what this process knew is written again
    backups = list(store_path.parent.glob("models.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == "{ broken by hand"
    assert any("could not be read" in p for p in r.problems)


# ------------------------------------------------------------------------------------------------
# Kills during a save
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, OSError])
def test_an_interrupted_save_keeps_every_committed_entry(store_path, monkeypatch, exc):
    r = ModelRegistry(user_store=store_path, include_builtin=False)
    r.register_model(entry("a/one"))
    r.register_model(entry("a/two"))
    before = store_path.read_bytes()
    real_replace = os.replace

    def die(src, dst):
        if str(dst) == str(store_path):
            assert Path(src).read_bytes()  # the temp file was written and fsynced
            raise exc("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(exc):
        r.register_model(entry("a/three"))
    monkeypatch.undo()
    assert store_path.read_bytes() == before and leftovers(store_path) == []
    assert r.get_model("a/three") is None
    r.register_model(entry("a/four"))
    assert on_disk(store_path) == ["a/one", "a/two", "a/four"]


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_a_process_killed_while_saving_never_loses_a_committed_entry(store_path):
    store_path.parent.mkdir(parents=True)
    code = CHILD_PRELUDE + textwrap.dedent("""
        r = ModelRegistry(user_store=sys.argv[1], include_builtin=False)
        filler = "x" * 20_000  # bigger files: longer writes, more chances to die mid-save
        for i in range(100_000):
            r.register_model(entry(f"{sys.argv[2]}/m{i}").model_copy(update={"quality_note": filler}))
            print(i, flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    committed: set[str] = set()
    for round_ in range(4):
        child = subprocess.Popen([sys.executable, "-c", code, str(store_path), f"r{round_}"], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        target = 5 + 7 * round_
        seen = -1
        while seen < target:
            line = child.stdout.readline()
            assert line, "the child stopped early"
            seen = int(line)
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()
        child.wait(timeout=30)
        child.stdout.close()
        for n in [seen, *(int(x) for x in rest.split())]:
            committed.update(f"r{round_}/m{i}" for i in range(n + 1))
        ids = set(on_disk(store_path))  # always a whole, valid file
        assert committed <= ids
    # Temp files the kills left behind are cleaned once stale; nothing else is touched.
    old = time.time() - 3600
    for p in store_path.parent.glob(".models.json.*.tmp"):
        os.utime(p, (old, old))
    r = ModelRegistry(user_store=store_path, include_builtin=False)
    assert committed <= {m.id for m in r.user_models()} and r.problems == []
    assert [n for n in leftovers(store_path) if n.endswith(".tmp")] == []


@pytest.mark.parametrize("where", ["mkstemp", "fsync"])
def test_a_full_disk_or_read_only_folder_is_one_error_and_the_file_is_unchanged(tmp_path, monkeypatch, where):
    import errno
    import os
    import tempfile

    from app.core.model_registry import ModelMetadata, ModelRegistry, RegistryError

    store = tmp_path / "models.json"
    registry = ModelRegistry(user_store=store)
    registry.register_model(ModelMetadata(name="Kept", provider="other", model_type="llm", size_gb=1.0,
                                          model_id="me/kept"))
    before = store.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile if where == "mkstemp" else os, where, no_space)
    with pytest.raises(RegistryError, match="could not be written.*No space left on device.*unchanged"):
        registry.register_model(ModelMetadata(name="New", provider="other", model_type="llm", size_gb=1.0,
                                              model_id="me/new"))
    monkeypatch.undo()
    assert store.read_bytes() == before
    assert registry.get_model("me/new") is None and registry.get_model("me/kept") is not None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
