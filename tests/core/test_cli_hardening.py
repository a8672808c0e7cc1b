"""Every mistake a user can make on the command line is one clear line and a non-zero exit, in bounded
time: no traceback, no hang, no silent clamp, no nonsense figure. Run in-process (``app.cli.main``) for
speed; the property test at the end (``-k test_property``) drives every subcommand with generated arguments.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import cli
from app.core.hardware.simulated import MAX_GPUS, SimulationSpecError, parse_spec
from tests.core.deadline import deadline

#: Exit statuses the CLI documents (app/cli.py): ok, failure (scan found nothing it could use),
#: bad input, does not fit.
DOCUMENTED_EXITS = {cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_USAGE, cli.EXIT_NO_FIT}
CALL_LIMIT_S = 20


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path, monkeypatch):
    """No user settings or registry of the machine running the tests leaks in, and nothing is written there."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)


def run_cli(capsys, *argv: str, limit: float = CALL_LIMIT_S) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, seconds) of ``modeldeck ARGV`` run in this process."""
    capsys.readouterr()
    start = time.monotonic()
    with deadline(limit):
        try:
            code = cli.main(list(argv))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    elapsed = time.monotonic() - start
    out = capsys.readouterr()
    return code, out.out, out.err, elapsed


def assert_one_clear_line(code: int, err: str, *words: str) -> None:
    assert code == cli.EXIT_USAGE, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and "warning:" not in line]
    assert len(lines) == 1, err
    for word in words:
        assert word in err, (word, err)


# --- estimate ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "words"), [
    (["--params", "inf"], ["--params", "1e14"]),
    (["--params", "1e400"], ["--params", "1e14"]),
    (["--params", "1e30"], ["--params", "1e14"]),  # printed 6.99e20 GiB
    (["--params", "nan"], ["--params", "not a number"]),
    (["--params", "8"], ["--params", "8e9"]),  # 8 parameters: almost surely meant 8 billion
    (["--params", "8e9", "--context", "inf"], ["--context", "100,000,000"]),
    (["--params", "8e9", "--context", "1e12", "--layers", "32", "--hidden", "4096", "--heads", "32"],
     ["--context", "100,000,000"]),  # was estimated (or clamped) instead of refused
    (["--params", "8e9", "--layers", "0", "--hidden", "4096", "--heads", "32"], ["--layers", "1,024"]),
    (["--params", "8e9", "--layers", "32", "--hidden", "4096", "--heads", "0"], ["--heads", "4,096"]),
    (["--params", "8e9", "--layers", "1e12", "--hidden", "4096", "--heads", "32"], ["--layers", "1,024"]),
    (["--params", "8e9", "--layers", "32.5", "--hidden", "4096", "--heads", "32"], ["--layers", "whole number"]),
    (["--params", "8e9", "--batch", "0"], ["--batch", "1,048,576"]),
    (["--params", "8e9", "--kv-dtype", "banana"], ["--kv-dtype", "q8_0"]),  # was silently ignored
    (["--params", "8e9", "--layers", "32", "--hidden", "4096", "--heads", "8", "--kv-heads", "32"],
     ["--kv-heads", "--heads"]),
    (["--layers", "1024", "--hidden", "131072", "--heads", "4096"], ["1e14"]),
    (["--params", "1e14", "--layers", "1", "--hidden", "1", "--heads", "1"], ["FFN width"]),
    (["--params", "8e9", "--vocab", "16777216"], ["--vocab", "4,194,304"]),
    (["--layers", "32", "--kv-heads", "8", "--head-dim", "128"], ["--params"]),  # KV alone, weights unknown
])
def test_estimate_refuses_numbers_outside_physical_ranges(capsys, extra, words):
    code, out, err, elapsed = run_cli(capsys, "estimate", "--quant", "Q4_K_M", *extra)
    assert_one_clear_line(code, err, *words)
    assert out == "" and elapsed < 5


def test_estimate_with_a_trillion_layers_is_refused_at_once_not_estimated(capsys):
    code, _, err, elapsed = run_cli(capsys, "estimate", "--quant", "fp16", "--params", "8e9", "--layers", "1e12",
                                    "--hidden", "4096", "--heads", "32", limit=5)
    assert_one_clear_line(code, err, "--layers")
    assert elapsed < 2


def test_estimate_kv_cache_from_layers_kv_heads_and_head_dim_without_hidden(capsys):
    """The contract: the KV cache needs only layers × KV heads × head dim; --hidden is not required."""
    code, out, err, _ = run_cli(capsys, "estimate", "--params", "8.03e9", "--quant", "Q4_K_M", "--layers", "32",
                                "--kv-heads", "8", "--head-dim", "128", "--context", "8192", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kv_cache_bytes"] == 2 * 32 * 8192 * 8 * 128 * 2
    assert doc["total_bytes"] == sum(doc[k] for k in ("weights_bytes", "kv_cache_bytes", "compute_bytes",
                                                      "overhead_bytes"))
    assert not any("KV cache" in n for n in doc["notes"])  # no "not estimated" note beside a real figure
    code, full, err, _ = run_cli(capsys, "estimate", "--params", "8.03e9", "--quant", "Q4_K_M", "--layers", "32",
                                 "--hidden", "4096", "--heads", "32", "--kv-heads", "8", "--head-dim", "128",
                                 "--context", "8192", "--json")
    assert code == 0, err
    assert json.loads(full)["kv_cache_bytes"] == doc["kv_cache_bytes"]


def test_estimate_at_the_range_edges_gives_finite_figures(capsys):
    code, out, err, _ = run_cli(capsys, "estimate", "--params", "1e14", "--quant", "fp32", "--context", "100000000",
                                "--layers", "126", "--kv-heads", "8", "--head-dim", "128", "--json")
    assert code == 0, err
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the output"))
    assert all(isinstance(doc[k], int) and doc[k] >= 0 for k in ("weights_bytes", "kv_cache_bytes", "total_bytes"))
    assert doc["weights_bytes"] == pytest.approx(4e14, rel=0.01)


def test_existing_messages_keep_their_words(capsys):
    code, _, err, _ = run_cli(capsys, "estimate", "--params", "-5", "--quant", "fp16")
    assert_one_clear_line(code, err, "must not be negative")


# --- plan ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "words"), [
    (["--kv-dtype", "banana"], ["--kv-dtype", "q8_0"]),  # was a traceback
    (["--context", "inf"], ["--context", "100,000,000"]),  # was a traceback
    (["--context", "1e12"], ["--context", "100,000,000"]),  # was silently clamped to the model's context
])
def test_plan_checks_its_arguments(capsys, extra, words):
    code, _, err, _ = run_cli(capsys, "plan", "llama3.1:8b", "--simulate", "rtx4090", *extra)
    assert_one_clear_line(code, err, *words)


# --- --simulate with a JSON file -----------------------------------------------------------------
@pytest.mark.parametrize(("content", "words"), [
    ('{"gpus": [{"card": "rtx4090", "memory_gib": 1e400}]}', ["memory_gib", "finite"]),
    ('{"gpus": [{"total_bytes": 1e400}]}', ["total_bytes", "finite"]),
    ('{"gpus": [{"memory_gib": 1e30}]}', ["memory_gib", "1024"]),
    ('{"gpus": [{"memory_gib": -5}]}', ["memory_gib"]),
    ('{"gpus": [{"card": "rtx4090", "load": NaN}]}', ["load", "finite"]),
    ('{"gpus": [{"card": "rtx4090", "compute_capability": [1e400, 2]}]}', ["compute capability", "finite"]),
    ('{"gpus": [{"card": "rtx4090", "power_limit_w": -1e308}]}', ["power_limit_w", "5000"]),
    ('{"gpus": [{"card": "rtx4090", "processes": [{"name": "x", "used_gib": -3}]}]}', ["used_gib"]),
    ('{"gpus": [{"card": "rtx4090", "processes": [{"name": "x", "used_gib": Infinity}]}]}', ["used_gib"]),
    ('{"gpus": [{"card": "rtx4090", "processes": [{"name": "x", "used_gib": 20}, {"name": "y", "used_gib": 20}]}]}',
     ["more than the card"]),
    ('{"gpus": [{"card": "rtx4090", "memory_gb": 48}]}', ["memory_gb", "memory_gib"]),  # a typo was ignored
    ('{"gpus": [{"card": ["rtx4090"]}]}', ["card"]),
    (json.dumps({"gpus": [{}] * 100_000}), ["100,000", str(MAX_GPUS)]),
    ("[" * 200_000 + "]" * 200_000, ["nested"]),
])
def test_simulation_files_with_nonsense_are_one_clear_line(tmp_path, capsys, content, words):
    rig = tmp_path / "rig.json"
    rig.write_text(content)
    with pytest.raises(SimulationSpecError) as err:
        parse_spec(str(rig))
    for word in words:
        assert word in str(err.value)
    code, out, stderr, elapsed = run_cli(capsys, "status", "--simulate", str(rig))
    assert_one_clear_line(code, stderr, "rig.json")
    assert elapsed < 5


def test_simulation_file_that_is_not_utf8(tmp_path, capsys):
    rig = tmp_path / "rig.json"
    rig.write_bytes(b'{"gpus": [{"card": "\xff"}]}')
    code, _, err, _ = run_cli(capsys, "status", "--simulate", str(rig))
    assert_one_clear_line(code, err, "UTF-8", "rig.json")


def test_a_machine_without_gpus_is_a_valid_simulation(tmp_path, capsys):
    rig = tmp_path / "rig.json"
    rig.write_text('{"gpus": []}')
    code, out, err, _ = run_cli(capsys, "status", "--simulate", str(rig), "--json")
    assert code == 0, err
    assert json.loads(out)["devices"] == []


@pytest.mark.parametrize(("spec", "words"), [
    ("a" * 5000, ["unknown card"]),  # once an OSError (file name too long) traceback
    ("9" * 5000 + "xrtx4090", ["count", str(MAX_GPUS)]),
    ("40xrtx4090,40xrtx4090", [str(MAX_GPUS)]),
])
def test_simulate_specs_are_bounded(capsys, spec, words):
    code, _, err, _ = run_cli(capsys, "status", "--simulate", spec)
    assert_one_clear_line(code, err, *words)
    assert len(err) < 1000  # the user's text is cut, not echoed in full


# --- screenshot and gui --------------------------------------------------------------------------
def test_screenshot_into_a_missing_folder_is_refused_before_rendering(tmp_path, capsys):
    """A clear error naming the folder, not a created one: a typo must not leave a folder tree behind."""
    target = tmp_path / "no" / "such" / "dir" / "shot.png"
    code, out, err, elapsed = run_cli(capsys, "screenshot", str(target), "--simulate", "rtx4090")
    assert_one_clear_line(code, err, str(target.parent), "does not exist", "mkdir")
    assert not (tmp_path / "no").exists()
    assert elapsed < 5 and out == ""


@pytest.mark.parametrize(("name", "words"), [
    (".", ["folder"]),
    ("shot.jpg", ["PNG"]),
])
def test_screenshot_targets_that_cannot_be_a_png(tmp_path, capsys, name, words):
    code, _, err, elapsed = run_cli(capsys, "screenshot", str(tmp_path / name))
    assert_one_clear_line(code, err, *words)
    assert elapsed < 5


def test_screenshot_with_a_bad_simulate_spec_is_refused_before_rendering(tmp_path, capsys):
    code, _, err, elapsed = run_cli(capsys, "screenshot", str(tmp_path / "shot.png"), "--simulate", "garbage")
    assert_one_clear_line(code, err, "unknown card 'garbage'")
    assert elapsed < 5 and not (tmp_path / "shot.png").exists()


@pytest.mark.parametrize("interval", ["0", "-1", "inf", "nan", "1e400", "7200"])
def test_gui_interval_outside_its_range_is_refused(capsys, interval):
    code, _, err, _ = run_cli(capsys, "gui", f"--interval={interval}", "--simulate", "rtx4090")
    assert_one_clear_line(code, err, "--interval", "0.1", "3,600")


def test_gui_with_a_bad_simulate_spec_says_so_before_anything_else(capsys):
    code, _, err, _ = run_cli(capsys, "gui", "--simulate", "garbage")
    assert_one_clear_line(code, err, "unknown card 'garbage'")
    assert "display" not in err  # the spec is the user's mistake, reported first


@pytest.mark.parametrize(("simulate", "interval", "words"), [
    ("garbage", 1.0, "unknown card"),
    (None, 0.0, "3600"),
    (None, math.inf, "3600"),
    (None, math.nan, "3600"),
])
def test_run_gui_checks_its_arguments_before_any_window(capsys, simulate, interval, words):
    from app.shell import run_gui

    assert run_gui(simulate, interval) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and "display" not in err


def test_gui_interval_range_matches_the_shell():
    from app import shell

    assert (cli.MIN_INTERVAL_S, cli.MAX_INTERVAL_S) == (shell.MIN_INTERVAL_S, shell.MAX_INTERVAL_S)


# --- the command itself --------------------------------------------------------------------------
def test_an_unknown_command_is_named_with_a_suggestion(capsys):
    code, _, err, _ = run_cli(capsys, "estimat", "--params", "8e9")
    assert_one_clear_line(code, err, "unknown command 'estimat'", "estimate")


def test_usage_errors_are_one_line_that_points_to_help(capsys):
    code, _, err, _ = run_cli(capsys, "status", "--bogus")
    assert_one_clear_line(code, err, "--bogus", "--help")


def test_broken_settings_are_one_line_from_status(tmp_path, capsys):
    cfg = tmp_path / "config" / "modeldeck"
    cfg.mkdir(parents=True)
    (cfg / "settings.json").write_text('{"gpu_reserve_mib": 1000000000000}')
    code, _, err, _ = run_cli(capsys, "status", "--simulate", "rtx4090")
    assert_one_clear_line(code, err, "gpu_reserve_mib", "settings.json", "1 TiB")


# --- property: generated arguments for every subcommand (not the GUI) ----------------------------
_NUMBERS = st.sampled_from(["inf", "-inf", "nan", "1e400", "-1e400", "1e30", "-5", "0", "-0", "1", "0.5", "32",
                            "8.03e9", "1e14", "1e12", "9" * 40, "", " ", "١٢", "0x10", "1_000", "NaN", "+7"])
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_VALUES = st.one_of(_NUMBERS, _TEXT, st.integers(-10**6, 10**15).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["rtx4090", "2xrtx4090", "100xrtx4090", "Q4_K_M", "fp16", "q8_0", "llama3.1:8b",
                                     "mistralai/Ministral-8B-v0.1", "cuda:0", "cpu", "llm", "1280x800", "0x0",
                                     "99999x99999"]))


def _flags(parser) -> dict[str, list[str]]:
    """subcommand -> its option strings (from the real parser, so new flags are covered too)."""
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: [s for a in p._actions for s in a.option_strings if s not in ("-h", "--help")]
            for name, p in sub.choices.items()}


_FLAGS = _flags(cli.build_parser())
_COMMANDS = [c for c in ("status", "models", "plan", "estimate", "scan", "screenshot") if c in _FLAGS]


@st.composite
def _argv(draw):
    command = draw(st.sampled_from(_COMMANDS))
    argv = [command]
    if command == "plan":
        argv.append(draw(_VALUES))
    if command == "estimate" and draw(st.booleans()):
        argv += ["--quant", draw(st.sampled_from(["Q4_K_M", "fp16", "int4", "banana"]))]
    if command == "scan":  # inside a scratch folder, never the machine's own files
        argv.append(f"@SCRATCH@/{draw(_TEXT).replace('/', '_').replace('.', '_')}")
    if command == "screenshot":
        argv.append(draw(st.sampled_from(["@SCRATCH@/shot.png", "@SCRATCH@/missing/shot.png", "@SCRATCH@",
                                          "@SCRATCH@/shot.jpg", "@SCRATCH@/"])))
    for _ in range(draw(st.integers(0, 5))):
        flag = draw(st.sampled_from(_FLAGS[command]))
        argv.append(flag)
        if draw(st.integers(0, 9)) > 0:
            argv.append(draw(_VALUES))
    return argv


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(argv=_argv())
def test_property_any_cli_arguments_end_cleanly(tmp_path, capsys, monkeypatch, argv):
    """No traceback, a documented exit status, bounded time, and JSON output that parses without NaN."""
    import app.shell

    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    argv = [a.replace("@SCRATCH@", str(scratch)) for a in argv]
    rendered: list[str] = []

    def fake_screenshot(out, simulate=None, size=(1280, 800)):  # the real render takes seconds per call
        check = getattr(app.shell, "check_screenshot_args", None)
        if check is not None:
            check(out, simulate)  # the real checks of the real entry point, then no render
        assert all(200 <= s <= 8000 for s in size)
        rendered.append(str(out))
        return 0

    monkeypatch.setattr(app.shell, "screenshot", fake_screenshot)
    monkeypatch.chdir(scratch)
    code, out, err, elapsed = run_cli(capsys, *argv)
    assert "Traceback" not in err, (argv, err)
    assert code in DOCUMENTED_EXITS, (argv, code, err)
    assert elapsed < CALL_LIMIT_S, (argv, elapsed)
    if code == cli.EXIT_USAGE:
        assert err.strip(), argv
    if code in (cli.EXIT_OK, cli.EXIT_NO_FIT) and "--json" in argv:
        json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON of {argv}"))
    assert "nan" not in out.lower().split() and "inf" not in out.lower().split(), (argv, out)


def test_scan_of_a_missing_path_is_a_failure_not_a_crash(tmp_path, capsys):
    code, _, err, _ = run_cli(capsys, "scan", str(tmp_path / "nothing-here"))
    assert code == cli.EXIT_FAILURE and "Traceback" not in err


def test_scan_into_a_read_only_user_store_is_one_line(tmp_path, monkeypatch):
    """The store refuses to replace a read-only models.json; `scan` says so in one line, exit 1."""
    import subprocess
    import sys

    from tests.core.test_importers import write_llama_gguf  # a real, tiny GGUF

    data = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    store = data / "modeldeck" / "models.json"
    from app.core.model_registry import ModelMetadata, ModelRegistry

    ModelRegistry(user_store=store).register_model(ModelMetadata(
        name="Mine", provider="other", model_type="llm", size_gb=1.0, model_id="me/mine"))
    before = store.read_text()
    store.chmod(0o444)
    folder = tmp_path / "models"
    folder.mkdir()
    write_llama_gguf(folder / "tiny.gguf")
    out = subprocess.run([sys.executable, "-m", "app", "scan", str(folder)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "models.json" in out.stderr
    assert store.read_text() == before
