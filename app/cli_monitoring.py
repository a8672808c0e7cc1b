"""`modeldeck exporter` and the cluster side of `modeldeck status` (``--prometheus`` / ``--exporter``)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

__all__ = ["add_exporter_parser", "cluster_plan", "cluster_status", "cmd_exporter", "parse_load", "port_type"]


def parse_load(text: str) -> tuple[str, str | None, str | None]:
    """``MODEL[@LEVEL[@DEVICE]]`` → (model, level, device)."""
    parts = text.split("@")
    if len(parts) > 3 or not parts[0].strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not MODEL[@LEVEL[@DEVICE]], e.g. llama-3.1-8b@Q4_K_M@cuda:0")
    model, level, device = (parts + [None, None])[:3]
    return model.strip(), (level or None), (device or None)


def add_exporter_parser(sub: Any, simulate_help: str, interval_type: Any) -> None:
    from app.core.metrics import DEFAULT_PORT

    ex = sub.add_parser("exporter", help="serve Prometheus metrics: devices, bookings, models, sampler health")
    ex.add_argument("--port", type=port_type(), default=DEFAULT_PORT, metavar="N",
                    help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one and prints it)")
    ex.add_argument("--address", default="127.0.0.1", metavar="A",
                    help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    ex.add_argument("--node", metavar="NAME", help="the node's name in the metrics (default: the host name)")
    ex.add_argument("--simulate", metavar="SPEC", help=simulate_help)
    ex.add_argument("--interval", type=interval_type, default=1.0, metavar="S",
                    help="hardware sampling interval in seconds (default 1); scrapes never call the driver")
    ex.add_argument("--load", type=parse_load, action="append", default=[], metavar="MODEL[@LEVEL[@DEVICE]]",
                    help="with --simulate: load this model on the simulated GPUs first (repeatable)")
    ex.set_defaults(func=cmd_exporter)


def port_type() -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a port number; give 0 to 65535") from None
        if not 0 <= value <= 65535:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; give a port from 0 to 65535")
        return value

    return parse


def cmd_exporter(args: argparse.Namespace) -> int:
    from app.cli_common import EXIT_OK, CliError, check_simulate, open_profiler, user_manager
    from app.core.metrics import serve_metrics
    from app.core.model_resource_manager import PlacementRefused, SimulatedLoader
    from app.core.sampler import Sampler

    check_simulate(args.simulate)
    if args.load and not args.simulate:
        raise CliError("--load needs --simulate: a standalone exporter holds no models of its own; serve the "
                       "metrics from the process that loads them (see the README, 'Prometheus')")
    stop = threading.Event()
    with open_profiler(args.simulate) as profiler:
        # A standalone exporter loads nothing: the preload list would be bookings without a model, seen
        # by every other machine as memory taken. With --simulate, the simulated runtime holds them.
        manager = user_manager(profiler, preload=bool(args.simulate))
        loader = SimulatedLoader.for_profiler(profiler)
        if loader is not None:
            manager.loader = loader
        sampler = Sampler(profiler, interval_s=args.interval)
        sampler.sampled.connect(manager.tick)
        sampler.tick()
        for model, level, device in args.load:
            try:
                manager.load(model, level, device)
            except (PlacementRefused, KeyError, ValueError) as err:
                raise CliError(f"--load {model}: {err}") from err
        try:
            server = serve_metrics(manager, sampler, port=args.port, address=args.address, node=args.node)
        except OSError as err:
            raise CliError(f"cannot listen on {args.address}:{args.port}: {err.strerror or err}; "
                           "choose another --port (0 picks a free one)") from err
        print(f"modeldeck: serving metrics on {server.url} (Ctrl+C stops)", file=sys.stderr, flush=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        sampler.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            sampler.stop()
            server.close()
            manager.stop()
    return EXIT_OK


def _read_nodes(args: argparse.Namespace) -> tuple[Any, tuple[str, ...]]:
    """The nodes of ``--prometheus`` / ``--exporter``; a source that cannot be read is one line on stderr."""
    from app.cli_common import CliError
    from app.core.cluster import ClusterError, fetch_nodes, sources_from

    try:
        sources = sources_from(prometheus=args.prometheus or [], exporters=args.exporter or [])
    except ClusterError as err:
        raise CliError(str(err)) from err
    nodes, errors = fetch_nodes(sources)
    for error in errors:
        print(f"modeldeck: {error}", file=sys.stderr)
    return nodes, errors


def cluster_status(args: argparse.Namespace) -> int:
    """``modeldeck status --prometheus URL`` / ``--exporter URL``: every node, its GPUs and models."""
    from app.cli_common import EXIT_FAILURE, EXIT_OK
    from app.core.cluster import cluster_document

    nodes, errors = _read_nodes(args)
    doc = cluster_document(nodes, errors)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_cluster(doc))
    return EXIT_OK if nodes else EXIT_FAILURE


def render_cluster(doc: dict[str, Any]) -> str:
    from app.core.units import format_gib

    lines: list[str] = []
    for n in doc["nodes"]:
        state = "up" if n["up"] else "DOWN"
        seen = ""
        if not n["up"]:
            seen = f", last seen {n['last_seen_text']}" if n["last_seen"] is not None else ", never seen"
        lines.append(f"{n['node']}  ({n['instance']}, {state}{seen})")
        if n["error"]:
            lines.append(f"  {n['error']}")
        if not n["up"] and n["devices"]:
            lines.append("  figures as last seen:")
        placed: set[str] = set()
        for d in n["devices"]:
            ram = d["device"] == "cpu"
            label = "RAM" if ram else d["device"]
            lines.append(f"  {label:<8}{d['name'][:30]:<31}{format_gib(d['used_bytes'] or 0):>10} used of "
                         f"{format_gib(d['total_bytes'])}, {format_gib(d['booked_bytes'])} booked, "
                         f"{format_gib(d['bookable_bytes'])} bookable, {d['pressure']}")
            for m in n["models"]:
                if d["device"] in m["devices"] or (ram and not m["devices"] and m["model_id"] not in placed):
                    placed.add(m["model_id"])
                    others = [x for x in m["devices"] if x != d["device"]]
                    also = f" (also on {', '.join(others)})" if others else ""
                    pin = ", pinned" if m["pinned"] else ""
                    lines.append(f"    {m['name'][:38]:<39}{m['level']:<9}{m['state']:<11}"
                                 f"{format_gib(m['booked_bytes'])}{also}{pin}")
        if not n["models"]:
            lines.append("    no models")
    if not doc["nodes"]:
        lines.append("No ModelDeck nodes found (is the exporter running, and does Prometheus scrape it?)")
    return "\n".join(lines)


def cluster_plan(args: argparse.Namespace, model: Any, request: Any) -> int:
    """``modeldeck plan MODEL --prometheus URL``: the planner's answer on every node, best first."""
    from app.cli_common import EXIT_NO_FIT, EXIT_OK, CliError
    from app.core.cluster import fit_document, where_fits

    nodes, errors = _read_nodes(args)
    try:
        answers = where_fits(nodes, request)
    except ValueError as err:  # a model that cannot be estimated at all (no size): the same on every node
        raise CliError(str(err)) from err
    if args.json:
        json.dump({"model_id": model.id, "fits": fit_document(answers), "errors": list(errors)}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{model.name} ({model.id}) across {len(nodes)} node(s):")
        width = max((len(a.node.node) for a in answers), default=0) + 2
        for a in answers:
            print(f"  {a.node.node:<{width}}{a.verdict:<26}{a.summary() if a.node.up else ''}")
        if not nodes:
            print("  no ModelDeck nodes found")
    return EXIT_OK if any(a.fits for a in answers) else EXIT_NO_FIT
