"""`modeldeck estimate` and `modeldeck plan` driven through the real CLI (``app.cli.main``, in-process) with
every combination of their flags, each present or absent, its value realistic, on a boundary, out of range
or junk. Whatever the flags, the command ends in bounded time in one of two ways: exit 0 (or plan's
"does not fit", 3) with a well-formed result, or a non-zero exit with exactly one clear error line. Never a
traceback, never a hang, never a negative, fractional or non-finite figure in the JSON contract.

``plan`` always runs with ``--simulate rtx3060`` (never the machine's own GPUs) and HOME / XDG dirs in a
scratch folder (never the user's settings, registry or calibration).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from app import cli
from app.core.estimation import ARCHITECTURE_LIMITS, KV_TYPES, quantization_names
from app.core.model_registry import ModelRegistry
from app.core.runtime_profile import BACKENDS, CACHE_TYPES, MAX_PARALLEL, MAX_RESOLUTION, RUNTIMES
from tests.core.deadline import Hang, deadline

#: Each invocation must finish within this (the estimate is arithmetic; plan reads a catalog).
CALL_LIMIT_S = 5.0
#: The hard stop that turns a hang into a failure (well above CALL_LIMIT_S, so slowness is reported
#: as such by the elapsed-time assertion, not as an alarm).
HANG_LIMIT_S = 30.0
SIMULATE = "rtx3060"

ESTIMATE_CONTRACT = ("weights_bytes", "kv_cache_bytes", "compute_bytes", "overhead_bytes")
PLAN_CONTRACT = ("model_id", "quantization", "estimate", "device", "fits", "alternatives")

CATALOG_IDS = [m.id for m in ModelRegistry(user_store=None).list_models()]


# --- running the CLI ------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _scratch_home(tmp_path, monkeypatch):
    """HOME and every XDG dir in a scratch folder: no user file is read or written."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.delenv("XDG_CONFIG_DIRS", raising=False)
    monkeypatch.delenv("XDG_DATA_DIRS", raising=False)
    monkeypatch.chdir(home)  # a relative MODEL that happens to exist is never read from the checkout


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, seconds) of ``modeldeck ARGV``; any exception but SystemExit fails
    the test with the argv that raised it."""
    capsys.readouterr()
    start = time.monotonic()
    with deadline(HANG_LIMIT_S):
        try:
            code = cli.main(list(argv))
        except SystemExit as exit_:  # argparse: usage errors (2) and --help (0)
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
        except Hang:
            pytest.fail(f"modeldeck {' '.join(map(repr, argv))} hung (> {HANG_LIMIT_S} s)")
        except Exception as err:  # any escape is the bug this test looks for
            out = capsys.readouterr()
            pytest.fail(f"modeldeck {argv!r} raised {type(err).__name__}: {err}\nstderr: {out.err}")
    elapsed = time.monotonic() - start
    out = capsys.readouterr()
    if currently_in_test_context():  # --hypothesis-show-statistics: how often each ending was reached
        event(f"{argv[0]} exit {code}")
    return code, out.out, out.err, elapsed


def _error_lines(err: str) -> list[str]:
    """stderr without its warnings (``modeldeck: warning: …``, or a logged ``modeldeck: WARNING: …``, may
    precede a result or an error)."""
    return [line for line in err.splitlines()
            if line.strip() and not line.lower().startswith("modeldeck: warning:")]


def check_outcome(argv: list[str], code: int, out: str, err: str, elapsed: float | None, ok_codes: set[int]) -> None:
    """The two allowed endings of any `estimate` / `plan` run (``elapsed`` None: not timed here)."""
    where = f"modeldeck {argv!r}\nexit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert elapsed is None or elapsed < CALL_LIMIT_S, f"{elapsed:.1f} s: {where}"
    assert "Traceback" not in err and "Traceback" not in out, where
    if code in ok_codes:
        assert out.strip(), where
        assert not _error_lines(err), where
        return
    assert code == cli.EXIT_USAGE, where
    lines = _error_lines(err)
    if lines and lines[0].startswith("usage:"):  # plain argparse's usage block (app.cli's _Parser prints none)
        lines = lines[1:]
        while lines and lines[0][:1].isspace():
            lines = lines[1:]
    assert len(lines) == 1, where
    line = lines[0]
    # Our own errors (CliError), or argparse's, which name the subcommand ("modeldeck estimate: error: …").
    assert line.startswith(("modeldeck: error: ", f"modeldeck {argv[0]}: error: ")), where
    assert len(line.split("error: ", 1)[1].strip()) > 5, where
    assert not out.strip(), where


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def check_estimate_doc(doc, where: str) -> None:
    assert isinstance(doc, dict), where
    assert isinstance(doc.get("quantization"), str) and doc["quantization"], where
    for key in (*ESTIMATE_CONTRACT, "total_bytes", "host_bytes"):
        assert _is_count(doc.get(key)), f"{key}={doc.get(key)!r}: {where}"
    assert doc["total_bytes"] == sum(doc[k] for k in ESTIMATE_CONTRACT), where


def _strict_json(text: str, where: str):
    def bad_constant(name):
        pytest.fail(f"{name} in the JSON: {where}")

    try:
        return json.loads(text, parse_constant=bad_constant)
    except json.JSONDecodeError as err:
        pytest.fail(f"not one JSON document ({err}): {where}")


# --- generated values -----------------------------------------------------------------------------
JUNK = ["-1", "-0", "1e400", "-1e400", "inf", "nan", "NaN", "abc", "", " ", "8B", "1.5", "0.5", "1e-3", "0x10",
        "1_000", "12abc", "١٢", "9" * 40, "9" * 400, "1" + "0" * 30]
#: Free text, never starting with '-' (which argparse would read as a flag: ``--j`` abbreviates ``--json``).
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=10).filter(lambda s: not s.startswith("-"))


class Flag:
    """A flag's values: ``good`` (realistic or in range, spelled as people do) and ``bad`` (a boundary just
    outside the range, junk text); a switch has neither."""

    def __init__(self, good: st.SearchStrategy[str] | None = None, bad: st.SearchStrategy[str] | None = None):
        self.good, self.bad = good, bad


SWITCH = Flag()


def int_flag(lo: int, hi: int, realistic: list[int]) -> Flag:
    """An integer flag: realistic values, the range's ends (also as ``4096.0``, ``+7``, `` 12 ``, ``1e3``),
    any value in range; or one past either end, ten times the top, and junk."""
    ends = [str(lo), str(hi), f"{float(hi):e}", f"{float(lo)}", f"+{lo}", f" {hi} "]
    good = st.one_of(st.sampled_from([str(v) for v in realistic]), st.sampled_from(ends), st.integers(lo, hi).map(str))
    outside = sorted({str(v) for v in (lo - 1, hi + 1, hi * 10, 0, 1) if not lo <= v <= hi})
    bad = st.one_of(st.sampled_from([*outside, f"{hi + 1}.0", f"{float(hi) * 2:e}"]), st.sampled_from(JUNK), _TEXT)
    return Flag(good, bad)


def choice_flag(valid: list[str], junk: tuple[str, ...] = ("", "abc", "f15", "q9_9", "-1", "nan"), *,
                any_case: bool = False) -> Flag:
    """A flag with a fixed set of values; ``any_case``: its parser lower-cases (else ``GPU`` is refused)."""
    upper = st.sampled_from(valid).map(lambda v: f" {v.upper()}")
    return Flag(st.one_of(st.sampled_from(valid), upper) if any_case else st.sampled_from(valid),
                st.one_of(st.sampled_from(list(junk)), _TEXT, *(() if any_case else (upper,))))


L = ARCHITECTURE_LIMITS
QUANT = Flag(st.sampled_from(quantization_names() + ["q4_k_m", " Q4_K_M ", "FP16"]),
             st.one_of(st.sampled_from(["", "Q4", "Q9_K", "banana", "8B", "nan", "int3", "gguf"]), _TEXT))
RUNTIME_FLAGS: dict[str, Flag] = {
    "--runtime": Flag(st.sampled_from([*RUNTIMES, "gguf", "hf", "Ollama", "comfyui", "faster-whisper"]),
                      st.one_of(st.sampled_from(["vllm", "", "llama", "tensorrt"]), _TEXT)),
    "--backend": choice_flag(list(BACKENDS)),
    "--parallel": int_flag(1, MAX_PARALLEL, [1, 2, 4, 8, 32]),
    "--batch": int_flag(1, 1 << 20, [1, 4, 512, 2048]),
    "--ubatch": int_flag(1, 1 << 20, [128, 256, 512]),
    "--resolution": Flag(st.sampled_from(["1024x1024", "512x512", "1280x720", "1024", "8x8", "1024×768", "1024*768",
                                          f"{MAX_RESOLUTION}x{MAX_RESOLUTION}", " 768 x 768 "]),
                         st.one_of(st.sampled_from(["7x7", "0x0", f"{MAX_RESOLUTION + 1}x8", "x", "axb", "1024x",
                                                    "-1x-1", "9999999x1", "1024x768x3", ""]), _TEXT)),
    "--frames": int_flag(1, 1 << 16, [1, 16, 49, 121]),
    "--beams": int_flag(1, MAX_PARALLEL, [1, 5]),
    "--cache-type-k": choice_flag(list(CACHE_TYPES), any_case=True),
    "--cache-type-v": choice_flag(list(CACHE_TYPES), any_case=True),
    "--no-kv-offload": SWITCH,
    "--offload-components": SWITCH,
    "--text-encoders-on-cpu": SWITCH,
    "--vae-tiling": SWITCH,
}
ESTIMATE_FLAGS: dict[str, Flag] = {
    "--params": Flag(st.one_of(st.sampled_from(["8.03e9", "7e9", "70e9", "1e6", "1e14", "405e9", "1000000",
                                                "100000000000000", "8e9", "123456789", "1.5e9"]),
                               st.integers(10**6, 10**14).map(str)),
                     st.one_of(st.sampled_from(["999999", "1.00000000000001e14", "1e15", "8", "8.03",
                                                *JUNK]), _TEXT)),
    "--layers": int_flag(1, cli.MAX_LAYERS, [1, 2, 16, 32, 80, 126]),
    "--hidden": int_flag(1, cli.MAX_HIDDEN, [64, 2048, 4096, 8192, 16384]),
    "--heads": int_flag(1, cli.MAX_HEADS, [1, 8, 32, 64, 128]),
    "--kv-heads": int_flag(1, cli.MAX_HEADS, [1, 2, 8]),
    "--head-dim": int_flag(1, cli.MAX_HEAD_DIM, [64, 128, 256, 576]),
    "--vocab": int_flag(1, cli.MAX_VOCAB, [32000, 128256, 262144]),
    "--intermediate": int_flag(1, cli.MAX_INTERMEDIATE, [8192, 14336, 28672]),
    "--context": int_flag(0, cli.MAX_CONTEXT, [0, 512, 4096, 131072, 1 << 20]),
    "--kv-dtype": choice_flag(list(KV_TYPES), any_case=True),
    "--device": choice_flag(["gpu", "cpu"], ("cuda", "cuda:0", "", "GPU0")),
    "--experts": int_flag(1, L["experts"], [8, 64, 128, 256]),
    "--active-experts": int_flag(1, L["active_experts"], [1, 2, 8]),
    "--expert-intermediate": int_flag(1, L["expert_intermediate_size"], [768, 1408, 2048]),
    "--shared-experts": int_flag(1, L["experts"], [1, 2]),
    "--mlp": choice_flag(["gated", "plain"], ("", "swiglu", "gelu")),
    "--attention-bias": SWITCH,
    "--sliding-window": int_flag(1, L["sliding_window"], [512, 1024, 4096]),
    "--sliding-window-pattern": int_flag(1, L["sliding_window_pattern"], [2, 6]),
    "--kv-lora-rank": int_flag(1, L["kv_lora_rank"], [512]),
    "--qk-rope-head-dim": int_flag(1, L["qk_rope_head_dim"], [64]),
    **RUNTIME_FLAGS,
}
PLAN_FLAGS: dict[str, Flag] = {
    "--quant": QUANT,
    "--context": int_flag(0, cli.MAX_CONTEXT, [0, 512, 4096, 32768, 131072]),
    "--kv-dtype": choice_flag(list(KV_TYPES), any_case=True),
    "--device": Flag(st.sampled_from(["cuda:0", "cpu"]),
                     st.one_of(st.sampled_from(["cuda:1", "gpu", "cuda", "cuda:-1", "CUDA:0", ""]), _TEXT)),
    **RUNTIME_FLAGS,
}
#: Mutually exclusive pairs: none, either, or both (which argparse refuses).
EXCLUSIVE = {"estimate": [("--tied", "--untied"), ("--flash-attention", "--no-flash-attention")],
             "plan": [("--flash-attention", "--no-flash-attention")]}
#: The shapes `estimate` accepts (app/cli.py's cmd_estimate): --params alone, the full architecture
#: (--layers, --hidden, --heads), or the KV cache alone (--layers, --kv-heads, --head-dim with --params);
#: "any" forces none of them: every flag independent. Each shape: (flags always given, flags a clean
#: example leaves out because that shape refuses them).
_WEIGHT_FLAGS = ("--hidden", "--heads", "--vocab", "--intermediate", "--experts", "--active-experts",
                 "--expert-intermediate", "--shared-experts", "--mlp", "--attention-bias", "--tied", "--untied")
_KV_FLAGS = ("--layers", "--kv-heads", "--head-dim", "--sliding-window", "--sliding-window-pattern",
             "--kv-lora-rank", "--qk-rope-head-dim")
_MOE_DETAILS = ("--active-experts", "--expert-intermediate", "--shared-experts")
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "any": ((), ()),
    "params": (("--params",), _WEIGHT_FLAGS + _KV_FLAGS),
    "full": (("--layers", "--hidden", "--heads"), ()),
    "kv_only": (("--params", "--layers", "--kv-heads", "--head-dim"), _WEIGHT_FLAGS),
}


def _chance(draw, p: float) -> bool:
    """True with probability ``p``; False is the simplest choice (what Hypothesis shrinks towards, and
    tries first). A sampled percentile, as st.floats favours 0 and 1."""
    return draw(st.sampled_from(range(100))) >= 100 - p * 100


@st.composite
def _value(draw, flag: Flag, junk_rate: float) -> str:
    return draw(flag.bad if _chance(draw, junk_rate) else flag.good)


@st.composite
def _flag_argv(draw, flags: dict[str, Flag], pairs, shape: str = "any", clean: bool = False) -> list[str]:
    """Every flag drawn independently: absent, or present with a good or a bad value. How many flags are
    present and how many values are bad vary per example. ``clean``: no bad value, no exclusive pair
    given together and no flag the ``shape`` refuses, so runs that reach the estimator are common too."""
    forced, refused = SHAPES[shape]
    refused = refused if clean else ()
    present = draw(st.sampled_from([0.05, 0.1, 0.2, 0.4]))
    junk_rate = 0.0 if clean else draw(st.sampled_from([0.0, 0.1, 0.3, 1.0]))
    parts: list[list[str]] = []
    for name, flag in flags.items():
        if name in refused or (name not in forced and not _chance(draw, present)):
            continue
        parts.append([name] if flag.good is None else [name, draw(_value(flag, junk_rate))])
    if clean and not any(p[0] == "--experts" for p in parts):  # MoE details need --experts
        parts = [p for p in parts if p[0] not in _MOE_DETAILS]
    for a, b in pairs:
        pick = draw(st.sampled_from([(), (), (a,), (b,)] if clean else [(), (a,), (b,), (a, b)]))
        parts += [[f] for f in pick if f not in refused]
    if draw(st.booleans()):
        parts.append(["--json"])
    order = draw(st.permutations(range(len(parts))))
    # ``--flag=value`` too: the only way a value starting with '-' (``-1``, ``-inf``) reaches a flag.
    eq = draw(st.booleans())
    return [s for i in order for s in ([f"{parts[i][0]}={parts[i][1]}"] if eq and len(parts[i]) == 2
                                       else parts[i])]


@st.composite
def estimate_argv(draw) -> list[str]:
    clean = not draw(st.booleans())
    argv = ["estimate"]
    quant = "good" if clean else draw(st.sampled_from(["good", "good", "bad", "absent"]))  # it is required
    if quant != "absent":
        argv.append(f"--quant={draw(QUANT.good if quant == 'good' else QUANT.bad)}")
    shape = draw(st.sampled_from(["params", "full", "kv_only", "full"] + ([] if clean else ["any", "any"])))
    return argv + draw(_flag_argv(ESTIMATE_FLAGS, EXCLUSIVE["estimate"], shape, clean))


@st.composite
def plan_argv(draw) -> list[str]:
    model = draw(st.one_of(st.sampled_from(CATALOG_IDS), st.sampled_from(CATALOG_IDS), st.sampled_from(CATALOG_IDS),
                           st.sampled_from(["llama3.1:8b", "Llama 3.1 8B", "nosuchmodel", "", "./nope.gguf"])))
    return ["plan", model, "--simulate", SIMULATE,
            *draw(_flag_argv(PLAN_FLAGS, EXCLUSIVE["plan"], clean=not draw(st.booleans())))]


# --- estimate -------------------------------------------------------------------------------------
def check_estimate(capsys, argv: list[str]) -> None:
    code, out, err, elapsed = run_cli(capsys, argv)
    check_outcome(argv, code, out, err, elapsed, {cli.EXIT_OK})
    where = f"modeldeck {argv!r}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    if code != cli.EXIT_OK:
        return
    if "--json" in argv:
        check_estimate_doc(_strict_json(out, where), where)
    else:
        words = out.lower().replace("(", " ").replace(")", " ").split()
        assert "nan" not in words and "inf" not in words and "-0.00" not in words, where
        assert "total" in words, where


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=150, **_SETTINGS)
@given(argv=estimate_argv())
def test_property_estimate_with_any_flags_ends_cleanly(capsys, argv):
    check_estimate(capsys, argv)


# Architectures that must estimate (exit 0) and meet the JSON contract: a Llama, an MoE, MLA, Gemma-style
# sliding windows, and the extreme corners of every range at once.
@pytest.mark.parametrize("extra", [
    ["--params", "8.03e9"],
    ["--params", "8.03e9", "--layers", "32", "--kv-heads", "8", "--head-dim", "128", "--context", "8192"],
    ["--layers", "32", "--hidden", "4096", "--heads", "32", "--kv-heads", "8", "--vocab", "128256",
     "--intermediate", "14336", "--context", "131072"],
    ["--layers", "48", "--hidden", "2048", "--heads", "32", "--kv-heads", "4", "--experts", "128",
     "--active-experts", "8", "--expert-intermediate", "768", "--context", "4096", "--untied"],
    ["--layers", "61", "--hidden", "7168", "--heads", "128", "--head-dim", "192", "--kv-lora-rank", "512",
     "--qk-rope-head-dim", "64", "--experts", "256", "--active-experts", "8", "--shared-experts", "1",
     "--expert-intermediate", "2048", "--intermediate", "18432", "--context", "4096"],
    ["--layers", "62", "--hidden", "5376", "--heads", "32", "--kv-heads", "16", "--head-dim", "128",
     "--sliding-window", "1024", "--sliding-window-pattern", "6", "--tied", "--context", "131072"],
    ["--layers", "32", "--hidden", "2560", "--heads", "32", "--mlp", "plain", "--attention-bias",
     "--context", "2048", "--device", "cpu"],
    ["--params", "1e14", "--context", "100000000"],
    ["--params", "1e6", "--layers", "1024", "--kv-heads", "4096", "--head-dim", "4096", "--context", "100000000",
     "--kv-dtype", "f32", "--batch", "1048576", "--ubatch", "1048576"],
    ["--layers", "1", "--hidden", "1", "--heads", "1", "--vocab", "1", "--intermediate", "1", "--context", "0"],
])
@pytest.mark.parametrize("quant", ["Q4_K_M", "fp16", "int4", "IQ2_XXS"])
def test_estimate_of_real_and_extreme_architectures_meets_the_contract(capsys, extra, quant):
    argv = ["estimate", "--quant", quant, "--json", *extra]
    code, out, err, elapsed = run_cli(capsys, argv)
    where = f"modeldeck {argv!r}\nexit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert code == cli.EXIT_OK, where
    check_outcome(argv, code, out, err, elapsed, {cli.EXIT_OK})
    check_estimate_doc(_strict_json(out, where), where)


# --- plan -----------------------------------------------------------------------------------------
def check_plan(capsys, argv: list[str]) -> int:
    code, out, err, elapsed = run_cli(capsys, argv)
    check_outcome(argv, code, out, err, elapsed, {cli.EXIT_OK, cli.EXIT_NO_FIT})
    where = f"modeldeck {argv!r}\nexit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    if code in (cli.EXIT_OK, cli.EXIT_NO_FIT) and "--json" in argv:
        doc = _strict_json(out, where)
        assert isinstance(doc, dict), where
        missing = [k for k in PLAN_CONTRACT if k not in doc]
        assert not missing, f"missing {missing}: {where}"
        assert isinstance(doc["model_id"], str) and doc["model_id"], where
        assert doc["fits"] is (code == cli.EXIT_OK), where
        assert isinstance(doc["alternatives"], list), where
        for alt in doc["alternatives"]:
            assert _is_count(alt.get("total_bytes")) and isinstance(alt.get("fits"), bool), where
            assert math.isfinite(alt.get("quality_ppl", 0.0)), where
        if doc["fits"]:
            assert doc["estimate"], where
            assert doc["quantization"] == doc["estimate"]["quantization"], where
        if doc["estimate"]:
            check_estimate_doc(doc["estimate"], where)
    elif code in (cli.EXIT_OK, cli.EXIT_NO_FIT):
        words = out.lower().split()
        assert "nan" not in words and "inf" not in words, where
    return code


@settings(max_examples=60, **_SETTINGS)
@given(argv=plan_argv())
def test_property_plan_with_any_flags_ends_cleanly(capsys, argv):
    check_plan(capsys, argv)


@pytest.mark.parametrize("model_id", CATALOG_IDS)
def test_every_catalog_model_plans_on_a_simulated_rtx3060(capsys, model_id):
    code = check_plan(capsys, ["plan", model_id, "--simulate", SIMULATE, "--json"])
    assert code in (cli.EXIT_OK, cli.EXIT_NO_FIT)


def test_the_catalog_is_not_empty():
    assert len(CATALOG_IDS) >= 10


# --- the real entry point ---------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "code"), [
    (["estimate", "--quant", "Q4_K_M", "--params", "8.03e9", "--layers", "32", "--kv-heads", "8", "--head-dim",
      "128", "--context", "8192", "--json"], cli.EXIT_OK),
    (["estimate", "--quant", "Q4_K_M", "--params", "8B"], cli.EXIT_USAGE),  # argparse's refusal
    (["estimate", "--quant", "Q4_K_M", "--layers", "32"], cli.EXIT_USAGE),  # cmd_estimate's CliError
])
def test_the_installed_command_ends_the_same_way_in_its_own_process(tmp_path, argv, code):
    """One run each way through ``python -m app``: the in-process results above hold for the real process
    (its own logging, its own exit), and nothing but one line reaches stderr."""
    import os
    import subprocess
    import sys

    start = time.monotonic()
    root = str(Path(cli.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    proc = subprocess.run([sys.executable, "-m", "app", *argv], capture_output=True, text=True, timeout=60,
                          env=env, cwd=tmp_path)  # HOME and XDG_* are the scratch ones (the autouse fixture)
    elapsed = time.monotonic() - start
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    # The time limit is the in-process one's; a fresh interpreter's imports on a loaded machine get more.
    check_outcome(argv, proc.returncode, proc.stdout, proc.stderr, None, {cli.EXIT_OK})
    assert elapsed < 30, elapsed
    if code == cli.EXIT_OK:
        check_estimate_doc(_strict_json(proc.stdout, str(argv)), str(argv))
