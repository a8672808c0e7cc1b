"""The `modeldeck` command line. `--json` output is a stable interface for scripts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

from app import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def _profiler(simulate: str | None) -> Any:
    from app.core.hardware.simulated import SimulationSpecError
    from app.core.hardware_profiler import HardwareProfiler

    try:
        return HardwareProfiler(simulate=simulate)
    except SimulationSpecError as err:
        raise CliError(str(err)) from err


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

    with _profiler(args.simulate) as profiler:
        doc = status_document(profiler.get_profile())
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_render_status(doc))
    return EXIT_OK


def cmd_gui(args: argparse.Namespace) -> int:
    raise CliError("the dashboard is not part of this build yet; use `modeldeck status` for now")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeck",
        description="ModelDeck: see what your GPUs and RAM hold, and what will fit.",
    )
    parser.add_argument("--version", action="version", version=f"modeldeck {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    simulate_help = "simulated GPUs instead of the real ones: rtx4090, 2xrtx4090, a100-80gb,rtx3060, or a JSON file"

    gui = sub.add_parser("gui", help="open the dashboard")
    gui.add_argument("--simulate", metavar="SPEC", help=simulate_help)
    gui.add_argument("--interval", type=float, default=1.0, metavar="S", help="sampling interval in seconds")
    gui.set_defaults(func=cmd_gui)

    status = sub.add_parser("status", help="devices, RAM and loaded models")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument("--simulate", metavar="SPEC", help=simulate_help)
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="modeldeck: %(levelname)s: %(message)s",
    )
    if args.command is None:
        # Until the dashboard ships, the bare command shows the status.
        args = parser.parse_args([*(argv or sys.argv[1:]), "status"])
    try:
        return int(args.func(args))
    except CliError as err:
        print(f"modeldeck: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
