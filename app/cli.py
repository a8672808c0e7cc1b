"""The `modeldeck` command line. `--json` output is a stable interface for scripts."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from app import __version__
from app.cli_common import EXIT_FAILURE, EXIT_NO_FIT, EXIT_OK, EXIT_USAGE, CliError
from app.cli_common import check_simulate as _check_simulate
from app.cli_common import open_profiler as _profiler
from app.cli_common import user_manager as _manager
from app.cli_common import user_registry as _registry

__all__ = ["EXIT_FAILURE", "EXIT_NO_FIT", "EXIT_OK", "EXIT_USAGE", "CliError", "build_parser", "main"]


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _fmt(value: float | None, unit: str, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _render_status(doc: dict[str, Any]) -> str:
    from app.core.units import format_gib

    lines: list[str] = []
    devices = doc["devices"]
    if devices:
        header = f"{'GPU':<4}{'Name':<32}{'Used / Total':>22}{'Free':>11}{'Util':>6}{'Temp':>7}{'Power':>14}"
        lines += [header, "-" * len(header)]
        for d in devices:
            if d["lost"]:
                lines.append(f"{d['index']:<4}{d['name'][:31]:<32}  LOST: {d['unavailable'].get('memory', '')}")
                continue
            used_total = (
                f"{d['used_bytes'] / 2**30:.1f} / {d['total_bytes'] / 2**30:.1f} GiB "
                f"{_pct(d['used_bytes'], d['total_bytes']):>4}"
            )
            power = "n/a"
            if d["power_w"] is not None:
                power = f"{d['power_w']:.0f}" + (f"/{d['power_limit_w']:.0f} W" if d["power_limit_w"] else " W")
            lines.append(
                f"{d['index']:<4}{d['name'][:31]:<32}{used_total:>22}{format_gib(d['free_bytes']):>11}"
                f"{_fmt(d['utilization_percent'], '%'):>6}{_fmt(d['temperature_c'], ' C'):>7}{power:>14}"
            )
            for p in d["processes"]:
                used = format_gib(p["used_bytes"]) if p["used_known"] else "n/a"
                lines.append(f"      pid {p['pid']:<8} {p['name'][:30]:<30} {used:>10}  {p['kind']}")
    else:
        lines.append("No GPU found.")
    ram = doc["ram"]
    lines.append("")
    unified = " (unified memory, shared with the GPU)" if ram["unified_memory"] else ""
    lines.append(
        f"RAM  {format_gib(ram['used_bytes'])} used of {format_gib(ram['total_bytes'])}, "
        f"{format_gib(ram['available_bytes'])} available{unified}"
    )
    if ram["swap_total_bytes"]:
        lines.append(f"Swap {format_gib(ram['swap_used_bytes'])} used of {format_gib(ram['swap_total_bytes'])}")
    lines.append("")
    lines.append("Backends:")
    for b in doc["backends"]:
        state = "ok" if b["available"] else f"unavailable: {b['reason']}"
        version = f" (driver {b['driver_version']})" if b["available"] and b["driver_version"] else ""
        lines.append(f"  {b['name']:<10}{state}{version}")
    lines.append("")
    if doc["models"]:
        lines.append("Models:")
        for m in doc["models"]:
            lines.append(f"  {m['model_id']:<40}{m['state']:<12}{m['device']:<8}{format_gib(m['reserved_bytes'])}")
    else:
        lines.append("Models: none loaded")
    return "\n".join(lines)




def cmd_status(args: argparse.Namespace) -> int:
    from app.core.reports import status_document

    if args.prometheus or args.exporter:
        if args.simulate:
            raise CliError("--simulate describes this machine; it cannot be combined with --prometheus/--exporter")
        from app.cli_monitoring import cluster_status

        return cluster_status(args)

    with _profiler(args.simulate) as profiler:
        manager = _manager(profiler)
        doc = status_document(profiler.get_profile(), [m.to_dict() for m in manager.loaded_models()])
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_render_status(doc))
    return EXIT_OK


def _dump(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")




def _find_model(registry: Any, name: str) -> Any:
    model = registry.get_model(name)
    if model is None:
        close = [m.id for m in registry.search(name, limit=3)]
        hint = f"; did you mean {', '.join(close)}?" if close else "; `modeldeck models` lists the known models"
        raise CliError(f"unknown model {name!r}{hint}")
    return model


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(float(text)) if kind is int else kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0 or value != value:
            raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
        return value

    return parse


def _g(value: float) -> str:
    """A bound as people write it: 0.1, 1,024 or 1e14."""
    if abs(value) >= 1e9:
        return f"{value:.0e}".replace("e+", "e")
    return f"{int(value):,}" if value == int(value) else f"{value:g}"


def _in_range(kind: type, lo: float, hi: float, what: str, hint: str = "") -> Any:
    """An argparse ``type=``: a finite number of ``kind`` between ``lo`` and ``hi`` (inclusive).

    The message says what was given, the range and what the number means, so the user can fix it
    without reading the source. ``int`` accepts ``8e9``-style input but not fractions.
    """

    def parse(text: str) -> Any:
        stripped = text.strip()
        try:
            value = float(stripped)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number; give {what} between {_g(lo)} and {_g(hi)}{hint}") from None
        if value != value:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {what} between {_g(lo)} and {_g(hi)}")
        if value < 0 <= lo:
            raise argparse.ArgumentTypeError(
                f"{text!r} must not be negative; give {what} between {_g(lo)} and {_g(hi)}")
        if not lo <= value <= hi:  # inf and 1e400 (which float() reads as inf) land here
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range: {what} must be between {_g(lo)} and {_g(hi)}{hint}")
        if kind is int:
            if value != int(value):
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {what} as an integer")
            return int(stripped) if re.fullmatch(r"[+]?\d+", stripped) else int(value)
        return float(value)

    return parse


#: Physical ranges of `estimate`'s numbers. The largest published models have ~2e12 parameters,
#: 126 layers, a 16,384-wide hidden state, 128 heads, head dims up to 576 (MLA), 262,144-token
#: vocabularies and 10M-token contexts; each bound leaves ample room above that and stays far from
#: anything that could overflow, hang or print a nonsense figure.
MAX_PARAMETERS = 1e14
MIN_PARAMETERS = 1e6
MAX_LAYERS = 1024
MAX_HIDDEN = 131_072
MAX_HEADS = 4096
MAX_HEAD_DIM = 4096
MAX_VOCAB = 4_194_304
MAX_INTERMEDIATE = 1_048_576
MAX_CONTEXT = 100_000_000
MAX_BATCH = 1_048_576
#: `gui --interval`: the sampler's own minimum, up to an hour (the 1 h graph then still has a point);
#: the same numbers as app.shell's (not imported here: building the parser must not load Qt).
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 3600.0


def _kv_dtype(text: str) -> str:
    from app.core.estimation import KV_TYPES

    if text.strip().lower() not in KV_TYPES:
        raise argparse.ArgumentTypeError(f"unknown KV-cache type {text!r}; use one of: {', '.join(KV_TYPES)}")
    return text.strip().lower()




def cmd_estimate(args: argparse.Namespace) -> int:
    from app.core.estimation import UnknownQuantizationError, resolve_quantization

    try:
        quant = resolve_quantization(args.quant)
    except UnknownQuantizationError as err:
        raise CliError(str(err)) from err
    full = all(v is not None for v in (args.layers, args.hidden, args.heads))
    kv_heads = args.kv_heads or args.heads
    head_dim = args.head_dim or (args.hidden // args.heads if args.hidden and args.heads else None)
    # The KV cache needs only layers × KV heads × head dim; the weights then come from --params.
    kv_only = not full and args.layers is not None and kv_heads is not None and head_dim is not None
    weight_flags = {"--vocab": args.vocab, "--intermediate": args.intermediate, "--experts": args.experts,
                    "--active-experts": args.active_experts, "--expert-intermediate": args.expert_intermediate,
                    "--shared-experts": args.shared_experts, "--tied/--untied": args.tied, "--mlp": args.mlp,
                    "--attention-bias": args.attention_bias or None}
    kv_flags = {"--sliding-window": args.sliding_window, "--sliding-window-pattern": args.sliding_window_pattern,
                "--kv-lora-rank": args.kv_lora_rank, "--qk-rope-head-dim": args.qk_rope_head_dim}
    flags = (args.layers, args.hidden, args.heads, args.kv_heads, args.head_dim, *weight_flags.values(),
             *kv_flags.values())
    if any(v is not None for v in flags) and not (full or kv_only):
        raise CliError("the architecture needs at least --layers, --hidden and --heads "
                       "(add --kv-heads, --head-dim and --vocab for an exact KV cache and embeddings), "
                       "or --layers, --kv-heads and --head-dim with --params for the KV cache alone")
    if args.heads is not None and args.kv_heads is not None and args.kv_heads > args.heads:
        raise CliError(f"--kv-heads {args.kv_heads} is more than --heads {args.heads}; "
                       "a model has at most as many KV heads as attention heads")
    if full and args.head_dim is None and args.heads > args.hidden:
        raise CliError(f"--heads {args.heads} is more than --hidden {args.hidden}, so a head would be 0 wide; "
                       "check the numbers or give --head-dim")
    given = [name for name, v in weight_flags.items() if v is not None]
    if kv_only and given:
        raise CliError(f"{', '.join(given)} size the weights, which need --hidden and --heads too; "
                       "add them, or drop those flags and let --params size the weights")
    if args.active_experts and args.experts and args.active_experts > args.experts:
        raise CliError(f"--active-experts {args.active_experts} is more than --experts {args.experts}; "
                       "a token uses at most every expert")
    if (args.active_experts or args.expert_intermediate or args.shared_experts) and not args.experts:
        raise CliError("--active-experts, --expert-intermediate and --shared-experts describe a mixture of experts; "
                       "give --experts (the routed experts per layer) too")
    if args.params is None and kv_only:
        raise CliError("--layers, --kv-heads and --head-dim size the KV cache; the weights need --params N "
                       "(parameter count) or --hidden and --heads for the full architecture")
    if args.params is None and not full:
        raise CliError("give --params N (parameter count), or the architecture flags")
    try:
        est, est_profile = _estimate(args, quant, full, kv_only, kv_heads, head_dim)
    except UnknownQuantizationError as err:
        raise CliError(str(err)) from err
    except ValueError as err:  # the estimator's own range checks (e.g. --params too large for the shapes)
        raise CliError(str(err)) from err
    for note in est.notes:
        if note.startswith("warning:"):
            print(f"modeldeck: {note}", file=sys.stderr)
    if args.json:
        _dump({**est.to_dict(), "runtime_settings": est_profile.to_dict()})
    else:
        print(f"{est.quantization}" + (" (approximate)" if est.approximate else ""))
        print("\n".join(est.explain()))
    return EXIT_OK


def _estimate(args: argparse.Namespace, quant: Any, full: bool, kv_only: bool, kv_heads: int | None,
              head_dim: int | None) -> Any:
    import dataclasses

    from app.cli_runtime import profile_from
    from app.core.estimation import Architecture, EstimateTerm, kv_cache_bytes
    from app.core.runtime_estimate import estimate_llm_run
    from app.core.runtime_profile import check_runtime

    given = profile_from(args, args.kv_dtype)
    try:
        check_runtime(given, "llm", quant.name)
    except ValueError as err:
        raise CliError(str(err)) from err
    profile = given.with_defaults_of("llama.cpp" if quant.is_gguf else "transformers")
    arch = None
    notes: list[str] = []
    if full:
        arch = Architecture(layers=args.layers, hidden_size=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                            head_dim=args.head_dim, vocab_size=args.vocab, intermediate_size=args.intermediate,
                            experts=args.experts, active_experts=args.active_experts,
                            expert_intermediate_size=args.expert_intermediate, shared_experts=args.shared_experts,
                            tie_word_embeddings=bool(args.tied), attention_bias=args.attention_bias,
                            mlp_gated=args.mlp != "plain", sliding_window=args.sliding_window,
                            sliding_window_pattern=args.sliding_window_pattern, kv_lora_rank=args.kv_lora_rank,
                            qk_rope_head_dim=args.qk_rope_head_dim, family="custom")
        if args.params:
            arch = arch.with_parameters(args.params)
        modelled = arch.parameter_count()
        if modelled > MAX_PARAMETERS:
            raise CliError(f"these flags describe a model of {modelled:.3g} parameters, more than the "
                           f"{_g(MAX_PARAMETERS)} this estimate accepts; check --layers, --hidden, --intermediate "
                           "and --vocab")
        if args.params and abs(modelled - args.params) > 0.05 * args.params:
            notes.append(f"warning: the architecture describes {modelled / 1e9:.2f} B parameters, "
                         f"{modelled / args.params - 1:+.0%} against --params {args.params / 1e9:.2f} B; "
                         "check --intermediate, --vocab, --experts, --mlp and --tied (the estimate uses the "
                         "architecture)")
    est = estimate_llm_run(quant, profile, parameters=args.params, architecture=arch, context=args.context,
                           device_kind=args.device)
    if kv_only and kv_heads is not None and head_dim is not None:
        shape = Architecture(layers=args.layers, hidden_size=head_dim, heads=kv_heads,  # only KV numbers count
                             kv_heads=kv_heads, head_dim=head_dim, sliding_window=args.sliding_window,
                             sliding_window_pattern=args.sliding_window_pattern, kv_lora_rank=args.kv_lora_rank,
                             qk_rope_head_dim=args.qk_rope_head_dim, family="custom")
        ctx = args.context * profile.sequences if profile.defaults.context_per_sequence else args.context
        kv, kv_text = kv_cache_bytes(shape, ctx, profile.k_type, v_dtype=profile.v_type,
                                     pad_to=256 if quant.is_gguf else 1, batch=profile.micro_batch,
                                     window_sequences=profile.sequences)
        est = dataclasses.replace(est, kv_cache=EstimateTerm(kv, kv_text),
                                  notes=tuple(n for n in est.notes if "KV cache" not in n))
    if notes:
        est = dataclasses.replace(est, notes=(*notes, *est.notes))
    return est, profile


def cmd_plan(args: argparse.Namespace) -> int:
    """What the manager would do now: the same planner, margins and ledger (its preload list held)."""
    import dataclasses

    from app.cli_runtime import profile_from
    from app.core.estimation import UnknownQuantizationError
    from app.core.manager.placement import Decision
    from app.core.runtime_profile import check_runtime
    from app.core.runtime_profile import resolve as resolve_profile
    from app.core.units import format_gib

    try:
        runtime = profile_from(args, args.kv_dtype)
    except ValueError as err:
        raise CliError(str(err)) from err
    with _profiler(args.simulate) as profiler:
        manager = _manager(profiler)
        path_model = _model_from_path(args.model)
        model = path_model or _find_model(manager.model_registry, args.model)
        known = [d for d in manager.devices()]
        remote = bool(args.prometheus or args.exporter)  # the device is each node's, not this machine's
        if args.device is not None and args.device not in known and not remote:
            raise CliError(f"no device {args.device!r} here; choose one of: {', '.join(known)}")
        try:
            if path_model is not None:
                from app.core.manager.placement import PlacementRequest
                from app.core.quantization_strategy import level_name

                request = PlacementRequest(path_model, level_name(args.quant) if args.quant else None, args.device,
                                           args.context, explain=True)
            else:
                request = manager.request(model.id, args.quant, args.device, context=args.context, explain=True)
        except UnknownQuantizationError as err:
            raise CliError(str(err)) from err
        request = dataclasses.replace(request, kv_dtype=args.kv_dtype, runtime=runtime)
        try:
            check_runtime(runtime, model.model_type, request.level)
        except ValueError as err:
            raise CliError(str(err)) from err
        if args.prometheus or args.exporter:
            from app.cli_monitoring import cluster_plan

            return cluster_plan(args, model, request)
        from app.core.quantization_strategy import EstimateUnavailable

        try:
            answer = manager.decide(request)
        except EstimateUnavailable as err:
            raise CliError(str(err)) from err
    if isinstance(answer, Decision):
        room = next((r for r in manager.ledger_view(exclude=(model.id,)).devices
                     if r.device == answer.placement.home_device), None)
        doc = answer.to_dict(room.available_bytes if room else None)
        doc["available_bytes"] = room.available_bytes if room else 0
        code = EXIT_OK
    else:
        doc = answer.to_dict()
        code = EXIT_NO_FIT
    if path_model is not None and path_model.quality_note:
        doc["model_note"] = path_model.quality_note
    if doc.get("quantization"):  # the settings as they apply, defaults filled in
        doc["runtime_settings"] = resolve_profile(runtime, model.model_type.value, doc["quantization"],
                                                  model.runtime_backend).to_dict()
    if args.json:
        _dump(doc)
        return code
    print(f"{model.name} ({model.id})")
    if path_model is not None and path_model.quality_note:
        print(f"  read from the path: {path_model.quality_note}")
    print(f"  {doc['reason']}")
    if doc["fits"]:
        print(f"  level {doc['quantization']} on {doc['device']} ({doc['placement']})"
              + (f", {doc['gpu_layers']} GPU layers" if doc["placement"] == "partial" else ""))
        for action in doc["actions"]:
            print(f"  first: {action['action']} {action['model_id']} — {action['reason']}")
    else:
        for option in doc.get("options", []):
            print(f"  option: {option}")
    est = doc["estimate"]
    if est:
        if est.get("runtime"):
            print(f"    runtime  {est['runtime']}")
        for key, label in (("weights", "weights"), ("kv_cache", "KV cache"), ("compute", "compute"),
                           ("overhead", "overhead")):
            print(f"    {label:<9}{format_gib(est[key + '_bytes'], 2):>11}  {est['explanations'][key]}")
        bookable = format_gib(doc["available_bytes"], 2)
        print(f"    {'total':<9}{format_gib(est['total_bytes'], 2):>11}   bookable {bookable}"
              f" (after the {format_gib(manager.safety_margin(doc['device'].split('+')[0] or 'cpu'), 2)} "
              "safety margin)")
        if est.get("host_bytes"):
            print(f"    {'in RAM':<9}{format_gib(est['host_bytes'], 2):>11}  {est['explanations']['host']}")
        for c in est.get("components", []):
            where = "CPU" if c["device"] == "cpu" else "GPU"
            print(f"    part     {format_gib(c['bytes'], 2):>11}  {c['name']} ({c['role']}), {c['level']} "
                  f"on the {where}")
        peak = max(est.get("phases", []), key=lambda p: p["peak_bytes"], default=None)
        for ph in est.get("phases", []):
            mark = "  ← peak" if ph is peak else ""
            print(f"    phase    {format_gib(ph['peak_bytes'], 2):>11}  {ph['name']}: {ph['explanation']}{mark}")
        for note in est.get("notes", []):
            print(f"    note: {note}")
    if doc["alternatives"]:
        print("  alternatives:")
        for alt in doc["alternatives"]:
            mark = "fits" if alt["fits"] else "too big"
            print(f"    {alt['quantization']:<10}{format_gib(alt['total_bytes'], 2):>11}  {mark:<8} "
                  f"{alt['quality_ppl']:+.3f} ppl")
    return code


def _one_model_folder(folder: str) -> bool:
    """A folder that describes one model by itself (checked without walking the tree under it)."""
    import os

    name = os.path.basename(os.path.normpath(folder))
    if name.startswith("models--") or os.path.basename(os.path.dirname(os.path.normpath(folder))) == "snapshots":
        return True
    try:
        entries = set(os.listdir(folder))
    except OSError:
        return False
    return bool(entries & {"config.json", "model_index.json"}) or any(e.endswith(".gguf") for e in entries)


def _model_from_path(text: str) -> Any:
    """A model read from a path (a folder with config.json, a Hugging Face cache entry, a GGUF file), not
    registered; None when ``text`` is not a path that exists."""
    import os

    if not (os.sep in text or text.startswith(".") or text.endswith((".gguf", ".json"))) or not os.path.exists(text):
        return None
    if os.path.isdir(text) and not _one_model_folder(text):
        raise CliError(f"{text} is not one model's folder (no config.json or model_index.json in it, and not a "
                       "Hugging Face cache entry); give the model's own folder or file, or register a tree of "
                       "models with `modeldeck scan PATH`")
    from app.core import model_registry
    from app.core.importers import ModelImportError

    reader = getattr(model_registry, "metadata_for_path", None)
    if reader is None:  # pragma: no cover - the reader ships with the registry
        raise CliError("reading a model from a path is not available in this build; register it with "
                       "`modeldeck scan PATH` and plan it by its id")
    try:
        return reader(text)
    except ModelImportError as err:
        raise CliError(str(err)) from err


def _model_doc(m: Any) -> dict[str, Any]:
    return {
        "model_id": m.id, "name": m.name, "provider": m.provider_name, "model_type": m.model_type.value,
        "parameters": m.parameter_count, "parameters_exact": m.parameters_exact, "size_gb": m.size_gb,
        "min_vram_gb": m.min_vram_gb, "recommended_vram_gb": m.recommended_vram_gb,
        "min_ram_gb": m.min_ram_gb, "recommended_ram_gb": m.recommended_ram_gb,
        "runtime": m.runtime_backend, "formats": list(m.formats), "aliases": list(m.aliases),
        "origin": m.origin, "path": m.path, "weight_bytes": m.weight_bytes, "file_type": m.file_type,
        "source": m.source,
    }


def cmd_models(args: argparse.Namespace) -> int:
    from app.core.model_registry import ModelType

    registry = _registry()
    try:
        model_type = ModelType(args.type.lower()) if args.type else None
    except ValueError:
        raise CliError(f"unknown type {args.type!r}; use one of: {', '.join(t.value for t in ModelType)}") from None
    models = registry.search(args.search, limit=10_000) if args.search else registry.list_models()
    if model_type is not None:
        models = [m for m in models if m.model_type == model_type]
    if args.provider:
        models = [m for m in models if m.provider_name == args.provider.lower()]
    if args.fits:
        with _profiler(args.simulate) as profiler:
            profile = profiler.get_profile()
        models = [m for m in models if registry.fits(m, profile)]
    if args.json:
        _dump({"models": [_model_doc(m) for m in models]})
        return EXIT_OK
    if not models:
        print("No models match.")
        return EXIT_OK
    print(f"{'Model':<46}{'Type':<16}{'Params':>9}{'Min GiB':>9}{'Rec GiB':>9}  Origin")
    for m in models:
        params = f"{m.parameter_count / 1e9:.2f}B" if m.parameter_count else "?"
        lo = f"{m.min_vram_gb:.1f}" if m.min_vram_gb is not None else "-"
        hi = f"{m.recommended_vram_gb:.1f}" if m.recommended_vram_gb is not None else "-"
        print(f"{m.id[:45]:<46}{m.model_type.value:<16}{params:>9}{lo:>9}{hi:>9}  {m.origin}")
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    from app.core.importers import ImportErrorKind, scan_path

    registry = _registry()
    found: list[Any] = []
    problems: list[Any] = []
    interactive = sys.stderr.isatty()

    def progress(done: int, total: int, current: str) -> None:
        if total >= 20 or interactive:
            end = "\n" if done == total or not interactive else "\r"
            print(f"modeldeck: scanning {done}/{total} {current[-60:]}", end=end, file=sys.stderr, flush=True)

    for path in args.paths:
        models, errors = scan_path(path, progress=progress)
        found.extend(models)
        problems.extend(errors)
    # Files that are no model (a pickle-named file outside a model's folder) are ignored, not failures.
    ignored = [e for e in problems if getattr(e, "kind", None) == ImportErrorKind.NOT_A_MODEL]
    problems = [e for e in problems if getattr(e, "kind", None) != ImportErrorKind.NOT_A_MODEL]
    registered = [registry.register_scanned(m) for m in found]
    if args.json:
        _dump({
            "models": [{**_model_doc(meta), "files": list(m.files), "file_bytes": m.file_bytes,
                        "exact": m.exact, "bytes_by_type": dict(m.bytes_by_type), "notes": list(m.notes)}
                       for meta, m in zip(registered, found, strict=True)],
            "errors": [{"path": str(e.path), "kind": str(getattr(e.kind, "value", e.kind)),
                        "message": str(getattr(e, "message", e))}
                       for e in problems],
            "ignored": [{"path": str(e.path), "message": str(e.message)} for e in ignored],
        })
    else:
        from app.core.units import format_gib

        for meta, m in zip(registered, found, strict=True):
            exact = "exact" if m.exact else "file size"
            print(f"{meta.name[:40]:<41}{m.format:<16}{m.file_type or '-':<9}"
                  f"{format_gib(m.weight_bytes, 2):>11} ({exact})  {meta.id}")
        for e in problems:
            print(f"modeldeck: skipped {e.path}: {getattr(e, 'message', e)}", file=sys.stderr)
        shown = ", ".join(str(e.path) for e in ignored[:3]) + (", …" if len(ignored) > 3 else "")
        print(f"{len(registered)} model(s) registered, {len(problems)} file(s) skipped"
              + (f", {len(ignored)} file(s) ignored as not models ({shown})" if ignored else ""))
    return EXIT_OK if registered or not problems else EXIT_FAILURE


def cmd_gui(args: argparse.Namespace) -> int:
    _check_simulate(args.simulate)  # before Qt and before any window
    try:
        from app.shell import check_gui_args, run_gui
    except ImportError as err:  # PySide6 missing or its system libraries absent
        raise CliError(f"the dashboard cannot start: {err}; `modeldeck status` works without Qt") from err
    try:
        check_gui_args(args.simulate, args.interval)
    except ValueError as err:
        raise CliError(str(err)) from err
    sources = [f"prometheus:{u}" for u in args.prometheus or []] + [f"exporter:{u}" for u in args.exporter or []]
    return int(run_gui(simulate=args.simulate, interval_s=args.interval, metrics_port=args.metrics_port,
                       metrics_address=args.metrics_address, cluster_sources=sources))


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1280x800") from None
    if not (200 <= w <= 8000 and 200 <= h <= 8000):
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be between 200 and 8000")
    return w, h


def cmd_screenshot(args: argparse.Namespace) -> int:
    _check_simulate(args.simulate)
    try:
        from app.shell import check_screenshot_args, screenshot
    except ImportError as err:
        raise CliError(f"screenshots need Qt: {err}") from err
    try:
        check_screenshot_args(args.out, args.simulate)  # before anything is rendered
    except ValueError as err:
        raise CliError(str(err)) from err
    return int(screenshot(args.out, simulate=args.simulate, size=args.size))


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says where to look, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modeldeck",
        description="ModelDeck: see what your GPUs and RAM hold, and what will fit.",
    )
    parser.add_argument("--version", action="version", version=f"modeldeck {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    simulate_help = "simulated GPUs instead of the real ones: rtx4090, 2xrtx4090, a100-80gb,rtx3060, or a JSON file"

    gui = sub.add_parser("gui", help="open the dashboard")
    gui.add_argument("--simulate", metavar="SPEC", help=simulate_help)
    interval = _in_range(float, MIN_INTERVAL_S, MAX_INTERVAL_S, "a sampling interval in seconds")
    gui.add_argument("--interval", type=interval, default=1.0, metavar="S",
                     help="sampling interval in seconds (0.1 to 3600, default 1)")
    from app.cli_monitoring import port_type

    gui.add_argument("--metrics-port", type=port_type(), default=None, metavar="N",
                     help="also serve Prometheus metrics on this port while the dashboard runs")
    gui.add_argument("--metrics-address", default="127.0.0.1", metavar="A",
                     help="address for --metrics-port (default 127.0.0.1: this machine only)")
    gui.add_argument("--prometheus", action="append", metavar="URL", help="a Prometheus server for the Cluster tab")
    gui.add_argument("--exporter", action="append", metavar="URL", help="a node's exporter for the Cluster tab")
    gui.set_defaults(func=cmd_gui)

    status = sub.add_parser("status", help="devices, RAM and loaded models")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument("--simulate", metavar="SPEC", help=simulate_help)
    status.add_argument("--prometheus", action="append", metavar="URL",
                        help="every ModelDeck node this Prometheus server scrapes (repeatable)")
    status.add_argument("--exporter", action="append", metavar="URL",
                        help="a node read from its exporter, e.g. http://gpu-box:9477 (repeatable)")
    status.set_defaults(func=cmd_status)

    models = sub.add_parser("models", help="the models ModelDeck knows")
    models.add_argument("--type", metavar="T",
                        help="llm, text_to_image, text_to_speech, speech_to_text, text_to_video, embedding")
    models.add_argument("--provider", metavar="P", help="llama, mistral, qwen, gemma, …")
    models.add_argument("--search", metavar="WORDS", help="only models matching these words")
    models.add_argument("--fits", action="store_true", help="only models that fit a GPU now (or RAM without a GPU)")
    models.add_argument("--simulate", metavar="SPEC", help=simulate_help)
    models.add_argument("--json", action="store_true", help="print one JSON document")
    models.set_defaults(func=cmd_models)

    plan = sub.add_parser("plan", help="how a model would load here: level, device, breakdown")
    plan.add_argument("model", metavar="MODEL",
                      help="model id, name or alias, or a path: a folder with config.json, a Hugging Face cache "
                           "entry, a GGUF file")
    plan.add_argument("--quant", metavar="Q", help="insist on this level (checked, never silently accepted)")
    plan.add_argument("--context", type=_in_range(int, 0, MAX_CONTEXT, "a context in tokens"), default=None,
                      metavar="N", help="context tokens (default 4096)")
    plan.add_argument("--kv-dtype", type=_kv_dtype, default="f16", metavar="T", help="KV cache type: f16, q8_0, q4_0 …")
    plan.add_argument("--device", metavar="D", help="cuda:N or cpu: honoured or refused (default: ModelDeck chooses)")
    plan.add_argument("--simulate", metavar="SPEC", help=simulate_help)
    plan.add_argument("--prometheus", action="append", metavar="URL",
                      help="where it would fit on the nodes this Prometheus server scrapes (proposes, never loads)")
    plan.add_argument("--exporter", action="append", metavar="URL", help="the same, for a node's exporter")
    plan.add_argument("--json", action="store_true", help="print one JSON document")
    from app.cli_runtime import add_architecture_flags, add_runtime_flags

    add_runtime_flags(plan, _in_range)
    plan.set_defaults(func=cmd_plan)

    from app.cli_monitoring import add_exporter_parser

    add_exporter_parser(sub, simulate_help, interval)

    from app.cli_calibration import add_calibration_parser

    add_calibration_parser(sub)

    est = sub.add_parser("estimate", help="memory for a model described by numbers")
    est.add_argument("--params", type=_in_range(int, MIN_PARAMETERS, MAX_PARAMETERS, "a parameter count",
                                                " (a count, not billions: 8B is 8e9)"),
                     metavar="N", help="parameter count, e.g. 8.03e9")
    est.add_argument("--quant", required=True, metavar="Q", help="fp16, int8, int4, Q4_K_M, IQ4_XS, …")
    est.add_argument("--layers", type=_in_range(int, 1, MAX_LAYERS, "a layer count"), metavar="L")
    est.add_argument("--hidden", type=_in_range(int, 1, MAX_HIDDEN, "a hidden size"), metavar="H")
    est.add_argument("--heads", type=_in_range(int, 1, MAX_HEADS, "an attention head count"), metavar="H")
    est.add_argument("--kv-heads", type=_in_range(int, 1, MAX_HEADS, "a KV head count"), metavar="H")
    est.add_argument("--head-dim", type=_in_range(int, 1, MAX_HEAD_DIM, "a head dimension"), metavar="D")
    est.add_argument("--vocab", type=_in_range(int, 1, MAX_VOCAB, "a vocabulary size"), metavar="V")
    est.add_argument("--intermediate", type=_in_range(int, 1, MAX_INTERMEDIATE, "an FFN width"), metavar="F",
                     help="FFN width (solved from --params if absent)")
    est.add_argument("--context", type=_in_range(int, 0, MAX_CONTEXT, "a context in tokens"), default=0,
                     metavar="N", help="tokens of KV cache (default 0)")
    est.add_argument("--kv-dtype", type=_kv_dtype, default="f16", metavar="T", help="f16, q8_0, q4_0 …")
    est.add_argument("--device", type=str.lower, choices=("gpu", "cpu"), default="gpu",
                     help="whose runtime overhead to add")
    est.add_argument("--json", action="store_true", help="print one JSON document")
    add_architecture_flags(est, _in_range)
    add_runtime_flags(est, _in_range, batch_default=512)
    est.set_defaults(func=cmd_estimate)

    scan = sub.add_parser("scan", help="register GGUF / safetensors files, folders and Hugging Face caches")
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument("--json", action="store_true", help="print one JSON document")
    scan.set_defaults(func=cmd_scan)

    shot = sub.add_parser("screenshot", help="render the dashboard offscreen to a PNG")
    shot.add_argument("out", metavar="OUT.png")
    shot.add_argument("--simulate", metavar="SPEC", default=None, help=simulate_help)
    shot.add_argument("--size", type=_size, default=(1280, 800), metavar="WxH", help="window size (default 1280x800)")
    shot.set_defaults(func=cmd_screenshot)
    return parser


def _with_default_command(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``modeldeck [--simulate SPEC]`` means ``modeldeck gui [--simulate SPEC]``."""
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    i = 0
    while i < len(argv) and argv[i] in ("-v", "-vv", "--verbose"):
        i += 1
    if i < len(argv) and (argv[i] in commands or argv[i] in ("-h", "--help", "--version")):
        return argv
    if i < len(argv) and not argv[i].startswith("-"):  # an unknown command is an error, never the dashboard
        import difflib

        close = difflib.get_close_matches(argv[i], list(commands), n=1)
        hint = f"did you mean {close[0]}?" if close else f"choose one of: {', '.join(commands)}"
        parser.error(f"unknown command {argv[i]!r}; {hint}")
    return [*argv[:i], "gui", *argv[i:]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_with_default_command(parser, list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="modeldeck: %(levelname)s: %(message)s",
    )
    from app.core.model_registry import RegistryError

    try:
        return int(args.func(args))
    except CliError as err:
        print(f"modeldeck: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RegistryError as err:  # the user's model store could not be written (read-only, locked, …)
        print(f"modeldeck: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
