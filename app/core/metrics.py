"""Prometheus metrics for one ModelDeck process: devices, bookings, models and the sampler's health.

A scrape reads what the process already knows — the sampler's newest profile and the manager's
ledger — and never calls the driver. Names and units are documented in ``docs/METRICS.md``; GPU
series carry DCGM's labels (``gpu``, ``UUID``, ``modelName``, ``pci_bus_id``, ``Hostname``) so they
join with a DCGM exporter's series on ``UUID``.

    server = serve_metrics(manager, sampler, port=9477)   # 127.0.0.1 unless another address is given
    ...
    server.close()
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from app import __version__
from app.core.hardware.snapshot import HardwareProfile
from app.core.memory_allocator import DeviceLedger, Reservation
from app.core.sampler import Sampler

if TYPE_CHECKING:
    from app.core.model_resource_manager import ModelResourceManager

__all__ = ["DEFAULT_PORT", "Exposition", "MetricsCollector", "MetricsServer", "is_loopback", "metrics_registry",
           "render_metrics", "serve_metrics"]

_log = logging.getLogger(__name__)

#: The exporter's port unless told otherwise (unassigned in Prometheus's default-port list).
DEFAULT_PORT = 9477
LOOPBACK = "127.0.0.1"

GPU_LABELS = ("gpu", "UUID", "modelName", "pci_bus_id", "Hostname", "device")
#: The categories a model books on a device; the runtime context is the device's (see the device series).
_CATEGORIES = ("weights", "kv_cache", "compute")


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP or a host name) only listens on this machine."""
    if address in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class _Family:
    """One metric family being written: rows of (preformatted labels, value)."""

    __slots__ = ("name", "kind", "doc", "rows")

    def __init__(self, name: str, kind: str, doc: str) -> None:
        self.name = name
        self.kind = kind
        self.doc = doc
        self.rows: list[tuple[str, float]] = []

    def add(self, labels: str, value: float) -> None:
        self.rows.append((labels, value))


def _escape(value: str) -> str:
    if not value.isascii():  # a name decoded from a file system may hold lone surrogates: never a failed scrape
        value = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _render(families: Iterable[_Family]) -> str:
    out: list[str] = []
    for f in families:
        if not f.rows:
            continue
        name = f.name
        out.append(f"# HELP {name} {f.doc}\n# TYPE {name} {f.kind}\n")
        out.extend(f"{name}{{{labels}}} {_number(value)}\n" if labels else f"{name} {_number(value)}\n"
                   for labels, value in f.rows)
    return "".join(out)


class MetricsCollector(Collector):
    """Writes the metrics from the manager's ledger and the sampler's newest profile.

    Cheap: a scrape takes the manager's lock briefly (for the models and the ledgers) and reads the
    sampler's ``latest``; nothing here waits on a driver. :meth:`render` writes the text exposition
    directly (labels of a GPU or a model are escaped once per scrape, not once per series);
    :meth:`collect` makes the same figures available to a host's own ``prometheus_client`` registry.
    """

    def __init__(self, manager: ModelResourceManager, sampler: Sampler, *, node: str | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._manager = manager
        self._sampler = sampler
        self._host = socket.gethostname()
        self._node = node or self._host
        self._wall = wall_clock

    @property
    def node(self) -> str:
        return self._node

    def render(self) -> str:
        """One scrape's text (Prometheus exposition format 0.0.4)."""
        families: list[_Family] = []
        profile = self._sampler.latest
        self._node_families(families)
        if profile is not None:
            self._gpu_families(profile, families)
            self._host_families(profile, families)
        ledgers, bookings = self._manager.ledgers_and_bookings()
        self._ledger_families(ledgers, families)
        self._model_families(bookings, families)
        self._sampler_families(profile, families)
        return _render(families)

    def collect(self) -> Iterator[Any]:
        """The same figures as ``prometheus_client`` metric families (slower than :meth:`render`)."""
        yield from text_string_to_metric_families(self.render())

    @staticmethod
    def _family(families: list[_Family], name: str, doc: str, kind: str = "gauge") -> _Family:
        family = _Family(name, kind, doc)
        families.append(family)
        return family

    # --- the node ---------------------------------------------------------------------------------
    def _node_families(self, out: list[_Family]) -> None:
        self._family(out, "modeldeck_node_info", "This ModelDeck process: its node name, host and version.").add(
            _labels((("node", self._node), ("Hostname", self._host), ("version", __version__))), 1)
        self._family(out, "modeldeck_scrape_timestamp_seconds",
                     "Wall-clock time of this scrape on the node (the node's last-seen time).").add("", self._wall())
        # The placement policy's settings, so another machine's "where would it fit" answers as this one would.
        settings = self._manager.settings
        self._family(out, "modeldeck_node_make_room",
                     "1 when a load may offload, unload or move idle models (the auto_swap setting).").add(
            "", 1 if settings.auto_swap else 0)
        self._family(out, "modeldeck_node_quality_floor_ppl",
                     "Levels this close to full quality (perplexity added) are tried on the GPUs first.").add(
            "", settings.quality_floor_ppl)
        if settings.max_loaded_models is not None:
            self._family(out, "modeldeck_node_max_loaded_models", "The cap on loaded models.").add(
                "", settings.max_loaded_models)

    # --- GPUs, as the driver reports them ---------------------------------------------------------
    def _gpu_families(self, profile: HardwareProfile, out: list[_Family]) -> None:
        f = self._family
        total = f(out, "modeldeck_gpu_memory_total_bytes", "GPU memory in all (DCGM_FI_DEV_FB_TOTAL, in bytes).")
        used = f(out, "modeldeck_gpu_memory_used_bytes", "GPU memory in use by anyone (DCGM_FI_DEV_FB_USED, bytes).")
        free = f(out, "modeldeck_gpu_memory_free_bytes", "GPU memory free (DCGM_FI_DEV_FB_FREE, bytes).")
        reserved = f(out, "modeldeck_gpu_memory_reserved_bytes",
                     "GPU memory the driver keeps for itself (DCGM_FI_DEV_FB_RESERVED, bytes).")
        util = f(out, "modeldeck_gpu_utilization_percent", "GPU utilization (DCGM_FI_DEV_GPU_UTIL).")
        mem_util = f(out, "modeldeck_gpu_memory_utilization_percent",
                     "Memory-bandwidth utilization (DCGM_FI_DEV_MEM_COPY_UTIL).")
        temp = f(out, "modeldeck_gpu_temperature_celsius", "GPU temperature (DCGM_FI_DEV_GPU_TEMP).")
        power = f(out, "modeldeck_gpu_power_watts", "Power draw (DCGM_FI_DEV_POWER_USAGE).")
        limit = f(out, "modeldeck_gpu_power_limit_watts", "Power limit (DCGM_FI_DEV_POWER_MGMT_LIMIT).")
        lost = f(out, "modeldeck_gpu_lost", "1 when the GPU stopped answering or fell off the bus.")
        info = f(out, "modeldeck_gpu_info", "A GPU's kind and compute capability.")
        missing = f(out, "modeldeck_gpu_field_unavailable",
                    "1 for each figure the driver could not read (the reason, which may hold live numbers, is "
                    "in the log and `modeldeck status`, not a label).")
        for g in profile.gpus:
            labels = _labels(zip(GPU_LABELS, (str(g.index), g.uuid or "", g.name, g.pci_bus_id or "", self._host,
                                              g.device_id), strict=True))
            lost.add(labels, 1 if g.lost else 0)
            cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else ""
            info.add(f"{labels},{_labels((('kind', str(g.kind)), ('compute_capability', cc)))}", 1)
            for field in dict(g.unavailable):
                missing.add(f"{labels},{_labels((('field', field),))}", 1)
            if g.lost:
                continue
            total.add(labels, g.total_bytes)
            used.add(labels, g.used_bytes)
            free.add(labels, g.free_bytes)
            for family, value in ((reserved, g.reserved_bytes), (util, g.utilization_percent),
                                  (mem_util, g.memory_utilization_percent), (temp, g.temperature_c),
                                  (power, g.power_w), (limit, g.power_limit_w)):
                if value is not None:
                    family.add(labels, value)

    def _host_families(self, profile: HardwareProfile, out: list[_Family]) -> None:
        host = profile.host
        for name, doc, value in (
            ("modeldeck_host_memory_total_bytes", "RAM in all.", host.total_bytes),
            ("modeldeck_host_memory_available_bytes", "RAM available to new allocations.", host.available_bytes),
            ("modeldeck_host_memory_used_bytes", "RAM in use.", host.used_bytes),
            ("modeldeck_host_swap_total_bytes", "Swap in all.", host.swap_total_bytes),
            ("modeldeck_host_swap_used_bytes", "Swap in use.", host.swap_used_bytes),
        ):
            if value is not None:
                self._family(out, name, doc).add("", value)

    # --- the ledger: what is booked, and what can still be booked ---------------------------------
    def _ledger_families(self, ledgers: Iterable[DeviceLedger], out: list[_Family]) -> None:
        f = self._family
        total = f(out, "modeldeck_device_total_bytes",
                  "Memory of a device as the ledger counts it (a GPU, or the RAM as device cpu).")
        booked = f(out, "modeldeck_device_booked_bytes",
                   "Booked by this process's models, with the shared runtime context.")
        bookable = f(out, "modeldeck_device_bookable_bytes",
                     "What can still be booked: free, less what is booked but not yet allocated, less the safety "
                     "reserve.")
        runtime = f(out, "modeldeck_device_runtime_context_bytes",
                    "The runtime context booked once for all of this process's models there.")
        reserve = f(out, "modeldeck_device_safety_reserve_bytes", "Kept free, never booked.")
        unmeasured = f(out, "modeldeck_device_unmeasured_bytes", "Booked, but not (yet) seen allocated by the driver.")
        ours = f(out, "modeldeck_device_measured_own_bytes",
                 "What this process holds there, as the driver measures it (where it can say).")
        level = f(out, "modeldeck_device_pressure_level", "Memory pressure: 0 ok, 1 elevated, 2 high, 3 critical.")
        for ledger in ledgers:
            lv = _labels((("device", ledger.device), ("name", ledger.name)))
            total.add(lv, ledger.total_bytes)
            booked.add(lv, ledger.reserved_bytes)
            bookable.add(lv, ledger.available_bytes)
            runtime.add(lv, ledger.runtime_bytes)
            reserve.add(lv, ledger.safety_reserve_bytes)
            unmeasured.add(lv, ledger.unreflected_bytes)
            if ledger.measured_ours_bytes is not None:
                ours.add(lv, ledger.measured_ours_bytes)
            level.add(lv, ledger.pressure.rank)

    # --- models -------------------------------------------------------------------------------------
    def _model_families(self, bookings: Iterable[Reservation], out: list[_Family]) -> None:
        f = self._family
        info = f(out, "modeldeck_model_info", "A model this process holds: name, type, level, placement, state.")
        pinned = f(out, "modeldeck_model_pinned", "1 when the model is pinned (never moved or unloaded by ModelDeck).")
        booked = f(out, "modeldeck_model_booked_bytes", "Booked for a model on a device, by category.")
        idle = f(out, "modeldeck_model_idle_seconds", "Seconds since the model was last used.")
        left = f(out, "modeldeck_model_keep_alive_remaining_seconds",
                 "Seconds until keep-alive unloads the model if it stays idle.")
        measured = f(out, "modeldeck_model_measured_bytes",
                     "What the runtime reported it allocated for a model, by device and category (llama.cpp: weights, "
                     "kv_cache, output, compute); absent when the runtime does not say.")
        context = f(out, "modeldeck_model_runtime_context_bytes",
                    "The runtime context a model needs on a device (booked once per device, shared: see "
                    "modeldeck_device_runtime_context_bytes).")
        now = self._manager.clock()
        ids: dict[str, str] = {}
        for m in self._manager.loaded_models():
            p = m.placement
            lm = ids[m.model_id] = _labels((("model", m.model_id),))
            info.add(lm + "," + _labels((("name", m.name), ("type", m.model_type.value), ("level", m.quantization),
                                         ("device", m.device), ("placement", p.kind if p is not None else ""),
                                         ("state", m.state.value))), 1)
            pinned.add(lm, 1 if m.pinned else 0)
            idle.add(lm, max(0.0, now - m.last_used))
            if m.expires_at is not None:
                left.add(lm, max(0.0, m.expires_at - now))
            for device, category, nbytes in m.measured:
                measured.add(f'{lm},{_labels((("device", device), ("category", category)))}', nbytes)
        for r in bookings:
            lm = ids.get(r.model_id) or _labels((("model", r.model_id),))
            on = f'{lm},device="{_escape(r.device)}"'
            for category in _CATEGORIES:
                booked.add(f'{on},category="{category}"', r.category(category))
            if r.runtime_bytes:
                context.add(on, r.runtime_bytes)

    # --- the sampler --------------------------------------------------------------------------------
    def _sampler_families(self, profile: HardwareProfile | None, out: list[_Family]) -> None:
        f = self._family
        health = self._sampler.health()
        f(out, "modeldeck_sampler_samples_total", "Hardware samples taken.", "counter").add("", health.samples)
        f(out, "modeldeck_sampler_failures_total", "Hardware samples that failed.", "counter").add("", health.failures)
        f(out, "modeldeck_sampler_interval_seconds", "The sampling interval.").add("", health.interval_s)
        if health.last_success is not None:
            f(out, "modeldeck_sampler_last_success_timestamp_seconds",
              "Wall-clock time of the newest hardware sample.").add("", health.last_success)
        up = f(out, "modeldeck_backend_up", "1 when a hardware backend (nvml, amd, …) answers.")
        for b in profile.backends if profile is not None else ():
            labels = (("backend", b.name), ("reason", b.reason or ""), ("driver_version", b.driver_version or ""))
            up.add(_labels(labels), 1 if b.available else 0)


def metrics_registry(manager: ModelResourceManager, sampler: Sampler, *, node: str | None = None,
                     process: bool = True) -> CollectorRegistry:
    """A ``prometheus_client`` registry with ModelDeck's figures (and the process's CPU and memory,
    unless ``process=False``), for a host that serves its own metrics with prometheus_client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(manager, sampler, node=node))
    if process:
        ProcessCollector(registry=registry)
    return registry


class Exposition:
    """What ``/metrics`` answers: ModelDeck's figures, then the process's (CPU seconds, memory)."""

    def __init__(self, collector: MetricsCollector, process: bool = True) -> None:
        self.collector = collector
        self._process: CollectorRegistry | None = None
        if process:
            self._process = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._process)

    def render(self) -> bytes:
        body = self.collector.render().encode()
        if self._process is not None:
            body += generate_latest(self._process)
        return body

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """A WSGI application: ``/metrics`` (and ``/``) with the text format; anything else is 404."""
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: ModelDeck serves /metrics\n"]
        body = self.render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]


def render_metrics(source: CollectorRegistry | MetricsCollector | Exposition) -> bytes:
    """One scrape's text exposition."""
    if isinstance(source, CollectorRegistry):
        return bytes(generate_latest(source))
    if isinstance(source, MetricsCollector):
        return source.render().encode()
    return source.render()


@dataclass
class MetricsServer:
    """A running exporter: where it listens, and how to stop it."""

    address: str
    port: int
    _server: Any
    _thread: Any

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop listening and wait for the server's thread (a second close does nothing)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
        self._server = None


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not logged."""


def serve_metrics(manager: ModelResourceManager, sampler: Sampler, *, port: int = DEFAULT_PORT,
                  address: str = LOOPBACK, node: str | None = None) -> MetricsServer:
    """Serve ``/metrics`` on a daemon thread. Port 0 picks a free port (see ``MetricsServer.port``).

    Listens on the loopback address unless another one is given; then it says so in the log, since
    the figures name the models and the machine. Raises ``OSError`` when the port is taken.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range; give 0 (any free port) to 65535")
    app = Exposition(MetricsCollector(manager, sampler, node=node))
    server_class = type("MetricsHTTPServer", (_Server,), {
        "address_family": socket.AF_INET6 if ":" in address else socket.AF_INET})
    server: WSGIServer = make_server(address, port, app, server_class, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="modeldeck-metrics", daemon=True)
    thread.start()
    bound = int(server.server_port)
    if not is_loopback(address):
        _log.warning("metrics are served on %s:%d, reachable from other machines; give --address 127.0.0.1 "
                     "to keep them on this one", address, bound)
    return MetricsServer(address, bound, server, thread)
