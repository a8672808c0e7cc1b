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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, StateSetMetricFamily
from prometheus_client.exposition import generate_latest, start_wsgi_server
from prometheus_client.registry import Collector

from app import __version__
from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.lifecycle import ModelState
from app.core.memory_allocator import PressureLevel
from app.core.sampler import Sampler

if TYPE_CHECKING:
    from app.core.model_resource_manager import ModelResourceManager

__all__ = ["DEFAULT_PORT", "MetricsCollector", "MetricsServer", "metrics_registry", "render_metrics", "serve_metrics",
           "is_loopback"]

_log = logging.getLogger(__name__)

#: The exporter's port unless told otherwise (unassigned in Prometheus's default-port list).
DEFAULT_PORT = 9477
LOOPBACK = "127.0.0.1"

GPU_LABELS = ("gpu", "UUID", "modelName", "pci_bus_id", "Hostname", "device")
_PRESSURE = [p.value for p in PressureLevel]
_STATES = [s.value for s in ModelState]
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


class MetricsCollector(Collector):
    """Builds the metric families from the manager's ledger and the sampler's newest profile.

    Cheap: a scrape takes the manager's lock briefly (for the models and the ledgers) and reads the
    sampler's ``latest``; nothing here waits on a driver.
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

    def collect(self) -> Iterator[Any]:
        yield from self._node_families()
        profile = self._sampler.latest
        if profile is not None:
            yield from self._gpu_families(profile)
            yield from self._host_families(profile)
        yield from self._ledger_families()
        yield from self._model_families()
        yield from self._sampler_families(profile)

    # --- the node ---------------------------------------------------------------------------------
    def _node_families(self) -> Iterator[Any]:
        info = InfoMetricFamily("modeldeck_node", "This ModelDeck process: its node name, host and version.")
        info.add_metric([], {"node": self._node, "Hostname": self._host, "version": __version__})
        yield info
        stamp = GaugeMetricFamily("modeldeck_scrape_timestamp_seconds",
                                  "Wall-clock time of this scrape on the node (the node's last-seen time).")
        stamp.add_metric([], self._wall())
        yield stamp

    # --- GPUs, as the driver reports them ---------------------------------------------------------
    def _gpu_families(self, profile: HardwareProfile) -> Iterator[Any]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=GPU_LABELS)

        total = gauge("modeldeck_gpu_memory_total_bytes", "GPU memory in all (DCGM_FI_DEV_FB_TOTAL, in bytes).")
        used = gauge("modeldeck_gpu_memory_used_bytes", "GPU memory in use by anyone (DCGM_FI_DEV_FB_USED, bytes).")
        free = gauge("modeldeck_gpu_memory_free_bytes", "GPU memory free (DCGM_FI_DEV_FB_FREE, bytes).")
        reserved = gauge("modeldeck_gpu_memory_reserved_bytes",
                         "GPU memory the driver keeps for itself (DCGM_FI_DEV_FB_RESERVED, bytes).")
        util = gauge("modeldeck_gpu_utilization_percent", "GPU utilization (DCGM_FI_DEV_GPU_UTIL).")
        mem_util = gauge("modeldeck_gpu_memory_utilization_percent",
                         "Memory-bandwidth utilization (DCGM_FI_DEV_MEM_COPY_UTIL).")
        temp = gauge("modeldeck_gpu_temperature_celsius", "GPU temperature (DCGM_FI_DEV_GPU_TEMP).")
        power = gauge("modeldeck_gpu_power_watts", "Power draw (DCGM_FI_DEV_POWER_USAGE).")
        limit = gauge("modeldeck_gpu_power_limit_watts", "Power limit (DCGM_FI_DEV_POWER_MGMT_LIMIT).")
        lost = gauge("modeldeck_gpu_lost", "1 when the GPU stopped answering or fell off the bus.")
        info = InfoMetricFamily("modeldeck_gpu", "A GPU's kind and compute capability.", labels=GPU_LABELS)
        missing = GaugeMetricFamily("modeldeck_gpu_field_unavailable",
                                    "1 for each figure the driver could not read (the reason is a label).",
                                    labels=(*GPU_LABELS, "field", "reason"))
        for g in profile.gpus:
            labels = [str(g.index), g.uuid or "", g.name, g.pci_bus_id or "", self._host, g.device_id]
            lost.add_metric(labels, 1.0 if g.lost else 0.0)
            cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else ""
            info.add_metric(labels, {"kind": str(g.kind), "compute_capability": cc})
            for field, reason in g.unavailable:
                missing.add_metric([*labels, field, reason], 1.0)
            if g.lost:
                continue
            total.add_metric(labels, g.total_bytes)
            used.add_metric(labels, g.used_bytes)
            free.add_metric(labels, g.free_bytes)
            for family, value in ((reserved, g.reserved_bytes), (util, g.utilization_percent),
                                  (mem_util, g.memory_utilization_percent), (temp, g.temperature_c),
                                  (power, g.power_w), (limit, g.power_limit_w)):
                if value is not None:
                    family.add_metric(labels, float(value))
        yield from (total, used, free, reserved, util, mem_util, temp, power, limit, lost, info, missing)

    def _host_families(self, profile: HardwareProfile) -> Iterator[Any]:
        host = profile.host
        for name, doc, value in (
            ("modeldeck_host_memory_total_bytes", "RAM in all.", host.total_bytes),
            ("modeldeck_host_memory_available_bytes", "RAM available to new allocations.", host.available_bytes),
            ("modeldeck_host_memory_used_bytes", "RAM in use.", host.used_bytes),
            ("modeldeck_host_swap_total_bytes", "Swap in all.", host.swap_total_bytes),
            ("modeldeck_host_swap_used_bytes", "Swap in use.", host.swap_used_bytes),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))

    # --- the ledger: what is booked, and what can still be booked ---------------------------------
    def _ledger_families(self) -> Iterator[Any]:
        labels = ("device", "name")
        total = GaugeMetricFamily("modeldeck_device_total_bytes",
                                  "Memory of a device as the ledger counts it (a GPU, or the RAM as device cpu).",
                                  labels=labels)
        booked = GaugeMetricFamily("modeldeck_device_booked_bytes",
                                   "Booked by this process's models, with the shared runtime context.", labels=labels)
        bookable = GaugeMetricFamily("modeldeck_device_bookable_bytes",
                                     "What can still be booked: free, less what is booked but not yet "
                                     "allocated, less the safety reserve.", labels=labels)
        runtime = GaugeMetricFamily("modeldeck_device_runtime_context_bytes",
                                    "The runtime context booked once for all of this process's models there.",
                                    labels=labels)
        reserve = GaugeMetricFamily("modeldeck_device_safety_reserve_bytes", "Kept free, never booked.",
                                    labels=labels)
        unreflected = GaugeMetricFamily("modeldeck_device_unmeasured_bytes",
                                        "Booked, but not (yet) seen allocated by the driver.", labels=labels)
        ours = GaugeMetricFamily("modeldeck_device_measured_own_bytes",
                                 "What this process holds there, as the driver measures it (where it can say).",
                                 labels=labels)
        level = GaugeMetricFamily("modeldeck_device_pressure_level",
                                  "Memory pressure: 0 ok, 1 elevated, 2 high, 3 critical.", labels=labels)
        state = StateSetMetricFamily("modeldeck_device_pressure", "Memory pressure as a state set.", labels=labels)
        for ledger in self._manager.ledgers():
            lv = [ledger.device, ledger.name]
            total.add_metric(lv, ledger.total_bytes)
            booked.add_metric(lv, ledger.reserved_bytes)
            bookable.add_metric(lv, ledger.available_bytes)
            runtime.add_metric(lv, ledger.runtime_bytes)
            reserve.add_metric(lv, ledger.safety_reserve_bytes)
            unreflected.add_metric(lv, ledger.unreflected_bytes)
            if ledger.measured_ours_bytes is not None:
                ours.add_metric(lv, ledger.measured_ours_bytes)
            level.add_metric(lv, ledger.pressure.rank)
            state.add_metric(lv, {p: p == ledger.pressure.value for p in _PRESSURE})
        yield from (total, booked, bookable, runtime, reserve, unreflected, ours, level, state)

    # --- models -------------------------------------------------------------------------------------
    def _model_families(self) -> Iterator[Any]:
        info = InfoMetricFamily("modeldeck_model", "A model this process holds: name, type, level, placement.",
                                labels=("model",))
        state = StateSetMetricFamily("modeldeck_model_state", "A model's state.", labels=("model",))
        pinned = GaugeMetricFamily("modeldeck_model_pinned", "1 when the model is pinned (never moved or unloaded "
                                   "by ModelDeck).", labels=("model",))
        booked = GaugeMetricFamily("modeldeck_model_booked_bytes", "Booked for a model on a device, by category.",
                                   labels=("model", "device", "category"))
        idle = GaugeMetricFamily("modeldeck_model_idle_seconds", "Seconds since the model was last used.",
                                 labels=("model",))
        left = GaugeMetricFamily("modeldeck_model_keep_alive_remaining_seconds",
                                 "Seconds until keep-alive unloads the model if it stays idle.", labels=("model",))
        now = self._manager.clock()
        for m in self._manager.loaded_models():
            p = m.placement
            info.add_metric([m.model_id], {
                "name": m.name, "type": m.model_type.value, "level": m.quantization, "device": m.device,
                "placement": p.kind if p is not None else "", "state": m.state.value,
            })
            state.add_metric([m.model_id], {s: s == m.state.value for s in _STATES})
            pinned.add_metric([m.model_id], 1.0 if m.pinned else 0.0)
            idle.add_metric([m.model_id], max(0.0, now - m.last_used))
            if m.expires_at is not None:
                left.add_metric([m.model_id], max(0.0, m.expires_at - now))
        for r in self._manager.reservations():
            for category in _CATEGORIES:
                booked.add_metric([r.model_id, r.device, category], r.category(category))
        yield from (info, state, pinned, booked, idle, left)

    # --- the sampler --------------------------------------------------------------------------------
    def _sampler_families(self, profile: HardwareProfile | None) -> Iterator[Any]:
        health = self._sampler.health()
        samples = CounterMetricFamily("modeldeck_sampler_samples", "Hardware samples taken.")
        samples.add_metric([], health.samples)
        failures = CounterMetricFamily("modeldeck_sampler_failures", "Hardware samples that failed.")
        failures.add_metric([], health.failures)
        yield samples
        yield failures
        yield GaugeMetricFamily("modeldeck_sampler_interval_seconds", "The sampling interval.",
                                value=health.interval_s)
        if health.last_success is not None:
            yield GaugeMetricFamily("modeldeck_sampler_last_success_timestamp_seconds",
                                    "Wall-clock time of the newest hardware sample.", value=health.last_success)
        up = GaugeMetricFamily("modeldeck_backend_up", "1 when a hardware backend (nvml, amd, …) answers.",
                               labels=("backend", "reason", "driver_version"))
        for b in profile.backends if profile is not None else ():
            up.add_metric([b.name, b.reason or "", b.driver_version or ""], 1.0 if b.available else 0.0)
        yield up


def metrics_registry(manager: ModelResourceManager, sampler: Sampler, *, node: str | None = None,
                     process: bool = True) -> CollectorRegistry:
    """A registry with ModelDeck's collector (and the process's CPU and memory, unless ``process=False``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(manager, sampler, node=node))
    if process:
        ProcessCollector(registry=registry)
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """One scrape's text exposition."""
    return bytes(generate_latest(registry))


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


def serve_metrics(manager: ModelResourceManager, sampler: Sampler, *, port: int = DEFAULT_PORT,
                  address: str = LOOPBACK, node: str | None = None) -> MetricsServer:
    """Serve ``/metrics`` on a daemon thread. Port 0 picks a free port (see ``MetricsServer.port``).

    Listens on the loopback address unless another one is given; then it says so in the log, since
    the figures name the models and the machine. Raises ``OSError`` when the port is taken.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range; give 0 (any free port) to 65535")
    registry = metrics_registry(manager, sampler, node=node)
    server, thread = start_wsgi_server(port, addr=address, registry=registry)
    bound = int(server.server_port)
    if not is_loopback(address):
        _log.warning("metrics are served on %s:%d, reachable from other machines; give --address 127.0.0.1 "
                     "to keep them on this one", address, bound)
    return MetricsServer(address, bound, server, thread)
