"""An estimate as text for the detail panes: the runtime, the terms on the device and their total, what stays
in RAM beside it, and for a pipeline its components and phases. One rendering for every view that shows a
breakdown (the registry browser's detail pane and the quantization picker)."""

from __future__ import annotations

from app.core.estimation import MemoryEstimate
from app.core.units import format_gib

__all__ = ["breakdown_lines", "detail_lines"]


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
