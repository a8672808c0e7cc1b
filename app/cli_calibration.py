"""`modeldeck calibration`: what llama.cpp measured against ModelDeck's estimates, and the corrections learned."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

__all__ = ["EMPTY_MESSAGE", "add_calibration_parser", "calibration_document", "cmd_calibration", "render"]

EMPTY_MESSAGE = ("no calibration yet: each load of a GGUF model records what llama.cpp really allocated next to "
                 "the estimate; load a GGUF model with the llama.cpp runtime: pip install 'modeldeck[llama]'")
#: The document's layout; raised when a key changes meaning.
DOCUMENT_VERSION = 1
_MODEL_WIDTH = 40


def add_calibration_parser(sub: Any) -> None:
    cal = sub.add_parser("calibration", help="estimates against what llama.cpp measured, and the corrections learned")
    cal.add_argument("--model", metavar="M",
                     help="only this model's entries (its id; else every id containing M, case ignored)")
    cal.add_argument("--clear", action="store_true",
                     help="remove the entries (with --model, only that model's) and say how many; asks nothing")
    cal.add_argument("--json", action="store_true", help="print one JSON document")
    cal.set_defaults(func=cmd_calibration)


def select(entries: list[Any], model: str | None) -> list[Any]:
    """Entries of ``model``: its exact id when some entry has it, else every id containing it (case ignored)."""
    if model is None:
        return list(entries)
    exact = [e for e in entries if e.model_id == model]
    if exact:
        return exact
    needle = model.casefold()
    return [e for e in entries if needle in e.model_id.casefold()]


def cmd_calibration(args: argparse.Namespace) -> int:
    from app.cli_common import EXIT_FAILURE, EXIT_OK
    from app.core.calibration import CalibrationError, CalibrationStore

    store = CalibrationStore()
    try:
        if args.clear:
            ids = None if args.model is None else {e.model_id for e in select(store.entries(), args.model)}
            removed = store.clear(ids) if ids is None or ids else 0
            if args.json:
                _dump({"version": DOCUMENT_VERSION, "path": str(store.path), "removed": removed})
            else:
                which = f" of {args.model!r}" if args.model is not None else ""
                print(f"removed {removed} calibration {'entry' if removed == 1 else 'entries'}{which} "
                      f"from {store.path}")
            return EXIT_OK
        entries = store.entries()
    except CalibrationError as err:
        print(f"modeldeck: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    doc = calibration_document(entries, select(entries, args.model), str(store.path), args.model)
    if args.json:
        _dump(doc)
    else:
        print(render(doc))
    return EXIT_OK


def _dump(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def _error(predicted: int | None, measured: int | None) -> float | None:
    """(measured - predicted) / predicted: + means the estimate was low."""
    if not predicted or measured is None:
        return None
    return round(measured / predicted - 1, 4)


def calibration_document(everything: list[Any], shown: list[Any], path: str,
                         model: str | None = None) -> dict[str, Any]:
    """The `--json` document: ``shown`` entries with their error per term, the error by term over them,
    and the corrections learned from ``everything`` (the ones estimates get)."""
    from app.core.calibration import MIN_LOADS, TERMS, learn_corrections, term_bytes

    rows = []
    errors: dict[str, list[float]] = {term: [] for term in TERMS}
    for e in shown:
        terms = {}
        for term in TERMS:
            predicted, measured = term_bytes(e.predicted, term), term_bytes(e.measured, term)
            error = _error(predicted, measured)
            if error is not None:
                errors[term].append(error)
            terms[term] = {"predicted_bytes": predicted, "measured_bytes": measured, "error": error}
        rows.append({"model_id": e.model_id, "level": e.level, "context": e.context, "device": e.device,
                     "runtime": e.runtime, "timestamp": e.timestamp, "date": e.date,
                     "predicted": dict(e.predicted), "measured": dict(e.measured), "terms": terms})
    summary = {term: {"loads": len(errs),
                      "median_error": round(statistics.median(errs), 4) if errs else None,
                      "worst_error": max(errs, key=abs) if errs else None}
               for term, errs in errors.items()}
    corrections = {term: {"factor": round(c.factor, 4), "median_ratio": round(c.median, 4), "loads": c.loads,
                          "applied": c.usable}
                   for term, c in learn_corrections(everything).items()}
    note = None
    if not everything:
        note = EMPTY_MESSAGE
    elif not shown:
        note = (f"no calibration entries for {model!r}; {len(everything)} for other models "
                "(`modeldeck calibration` lists them)")
    return {"version": DOCUMENT_VERSION, "path": path, "model": model, "entries": rows, "summary": summary,
            "corrections": corrections, "min_loads": MIN_LOADS, "note": note}


def _size(n: int | None) -> str:
    if n is None:
        return "n/a"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    return f"{n / (1 << 20):.0f} MiB" if n >= 10 << 20 else f"{n / (1 << 20):.1f} MiB"


def _pct(error: float | None) -> str:
    if error is None:
        return "n/a"
    pct = error * 100
    return f"{pct:+.1f}%" if abs(pct) < 1000 else f"{pct:+.0f}%"


def _short(text: str, width: int = _MODEL_WIDTH) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]


def render(doc: dict[str, Any]) -> str:
    """The human table of a calibration document."""
    if doc["note"] is not None and not doc["entries"]:
        return doc["note"]
    n = len(doc["entries"])
    lines = [f"{n} {'load' if n == 1 else 'loads'} measured, from {doc['path']}",
             "error = (measured - predicted) / predicted: + means the estimate was low", ""]
    rows = [["MODEL", "LEVEL", "CONTEXT", "DEVICE", "DATE", "TERM", "PREDICTED", "MEASURED", "ERROR"]]
    for e in doc["entries"]:
        first = True
        for term, t in e["terms"].items():
            if t["predicted_bytes"] is None and t["measured_bytes"] is None:
                continue
            head = ([_short(e["model_id"]), e["level"], f"{e['context']:,}", e["device"], e["date"]] if first
                    else [""] * 5)
            rows.append([*head, term, _size(t["predicted_bytes"]), _size(t["measured_bytes"]), _pct(t["error"])])
            first = False
    lines += _table(rows, right={2, 6, 7, 8})
    lines.append("")
    summary = [["TERM", "LOADS", "MEDIAN ERROR", "WORST", "CORRECTION"]]
    for term, s in doc["summary"].items():
        c = doc["corrections"].get(term)
        if c is None:
            correction = "none (nothing measured)"
        elif c["applied"]:
            correction = f"× {c['factor']:.2f} from {c['loads']} loads"
        else:
            correction = f"none yet ({c['loads']} of {doc['min_loads']} loads)"
        summary.append([term, str(s["loads"]), _pct(s["median_error"]), _pct(s["worst_error"]), correction])
    lines += _table(summary, right={1, 2, 3})
    if doc["model"] is not None:
        lines.append("(corrections are learned from every model's loads)")
    return "\n".join(lines)
