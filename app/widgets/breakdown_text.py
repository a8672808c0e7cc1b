"""An estimate as text for the detail panes: the runtime, the terms on the device and their total, what stays
in RAM beside it, and for a pipeline its components and phases. One rendering for every view that shows a
breakdown (the registry browser's detail pane and the quantization picker)."""

from __future__ import annotations

from typing import Any

from app.core.estimation import MemoryEstimate
from app.core.manager.placement import Decision, Refusal
from app.core.units import format_gib

__all__ = ["breakdown_lines", "detail_lines", "answer_text", "fit_cell"]


def breakdown_lines(estimate: MemoryEstimate) -> list[str]:
    """An estimate as aligned "term  GiB" lines, each followed by its reason (wraps in a narrow pane)."""
    rows = (("weights", estimate.weights), ("KV cache", estimate.kv_cache), ("compute", estimate.compute),
            ("overhead", estimate.overhead))
    lines: list[str] = []
    for label, term in rows:
        lines.append(f"{label:<9}{format_gib(term.bytes, 2):>11}")
        if term.explanation:
            lines.append(f"  {term.explanation}")
    approx = "  (approximate)" if estimate.approximate else ""
    lines.append(f"{'total':<9}{format_gib(estimate.total_bytes, 2):>11}{approx}")
    return lines


def detail_lines(estimate: MemoryEstimate) -> list[str]:
    """The breakdown as the picker shows it: the runtime, the terms on the device and their total, what
    stays in RAM beside it, and for a pipeline one row per component and one per phase (the peak marked)."""
    lines = [f"runtime  {estimate.runtime}"] if estimate.runtime else []
    lines += breakdown_lines(estimate)
    if estimate.host_bytes:
        lines.append(f"{'in RAM':<9}{format_gib(estimate.host_bytes, 2):>11}")
        lines.append(f"  {estimate.host.explanation}")
    width = max([10, *(len(c.name) for c in estimate.components), *(len(p.name) for p in estimate.phases)])
    if estimate.components:
        lines.append(f"{'component':<{width}}  {'role':<13} {'level':<7} {'on':<4}{'size':>10}")
        for c in estimate.components:
            lines.append(f"{c.name:<{width}}  {c.role:<13} {c.level:<7} {'CPU' if c.device == 'cpu' else 'GPU':<4}"
                         f"{format_gib(c.bytes, 2):>10}")
    if estimate.phases:
        peak = max(estimate.phases, key=lambda p: p.peak_bytes)
        lines.append(f"{'phase':<{width}}  {'device peak':>13}")
        for p in estimate.phases:
            mark = "  ← peak" if p is peak else ""
            lines.append(f"{p.name:<{width}}  {format_gib(p.peak_bytes, 2):>13}{mark}")
            lines.append(f"  {p.explanation}")
    return lines


def answer_text(answer: Decision | Refusal, quality: str,
                fallback: MemoryEstimate | None = None) -> tuple[list[str], str, str]:
    """The picker's view of the planner's answer: (breakdown lines, the sentence under it, the Load button's
    label). A refusal shows its estimate (or ``fallback``) and why it cannot load."""
    if isinstance(answer, Refusal):
        est = answer.estimate or fallback
        return (detail_lines(est) if est else []), f"Cannot load: {answer.message()}.", "&Load"
    placement = answer.placement
    lines = detail_lines(placement.estimate)
    for share in placement.shares:
        layers = f", {share.layers} layers" if share.layers is not None and placement.kind != "gpu" else ""
        lines.append(f"books {format_gib(share.own_bytes, 2)} on {share.device}{layers}")
    text = f"{placement.describe()}: {placement.reason}. Quality: {quality}."
    label = "&Load"
    if answer.actions:
        text += "\nFirst, to make room: " + "; ".join(a.describe() for a in answer.actions) + "."
        moved = len(answer.actions)
        label = f"&Load ({moved} model{'s' if moved > 1 else ''} moved)"
    return lines, text, label


def fit_cell(answer: Decision | Refusal | None, shortfall: int, room: Any) -> tuple[str, str, bool]:
    """(text, tooltip, fits) of one level × device cell: the spare or missing bytes, or why it cannot run."""
    if isinstance(answer, Refusal) and answer.cause != "memory":
        return ("no FP8 kernels" if answer.cause == "capability" else "no"), answer.reason, False
    if shortfall <= 0:
        return f"fits, {format_gib(-shortfall)} spare", f"{room.device}: {format_gib(room.available_bytes, 2)} " \
            "bookable now", True
    return f"short {format_gib(shortfall)}", (answer.message() if isinstance(answer, Refusal) else ""), False
