"""Several machines at once: ModelDeck nodes read from a Prometheus server or from their exporters.

Read-only. A node's devices, bookings and models come from the metrics its exporter serves
(``app.core.metrics``); "where would this model fit" runs the same planner as a local load, fed
with each node's ledger. It proposes; it never loads anything remotely.

A node that stops answering is shown as down with the time it was last seen and the figures it had
then, never as a machine with zero memory: from Prometheus, its series are read at the moment of
its last successful scrape; from an exporter, the last answer is kept.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.core.estimation import EstimateTerm, MemoryEstimate
from app.core.manager.admission import LIVE_STATES, apply_cap
from app.core.manager.placement import (
    Decision,
    DeviceRoom,
    Holding,
    LedgerView,
    Placement,
    PlacementRequest,
    Policy,
    Refusal,
    Share,
)
from app.core.manager.planner import decide
from app.core.manager.settings import ManagerSettings
from app.core.model_spec import ModelMetadata, ModelType

__all__ = [
    "CPU_ONLY", "DOWN", "FITS", "MOVES", "NO_FIT", "PARTIAL", "NodePolicy", "answer_on", "ledger_of", "unique_nodes",
    "ClusterError", "ExporterSource", "FitAnswer", "NodeSnapshot", "PrometheusSource", "RemoteDevice", "RemoteModel",
    "Sample", "cluster_document", "fetch_nodes", "fit_document", "node_from_samples", "sources_from", "where_fits",
]

#: (metric name, labels, value), as scraped.
Sample = tuple[str, Mapping[str, str], float]

_PRESSURE = ("ok", "elevated", "high", "critical")
#: Every series a node is built from (one regex query to Prometheus), and no other.
SERIES = (r"modeldeck_(node_(info|make_room|quality_floor_ppl|max_loaded_models)|scrape_timestamp_seconds"
          r"|gpu_(memory_used_bytes|info|lost)|host_memory_used_bytes"
          r"|device_(total|booked|bookable|runtime_context|safety_reserve)_bytes|device_pressure_level"
          r"|model_(info|pinned|booked_bytes|runtime_context_bytes|idle_seconds|keep_alive_remaining_seconds))")
#: A node's clock reading outside this range is not a time (year 2000 to 2100).
_SANE_TIME = (946_684_800.0, 4_102_444_800.0)
#: The most a /metrics page or a query answer may be; a larger one is refused, not read.
MAX_BODY_BYTES = 32 * 2**20
DEFAULT_TIMEOUT_S = 5.0


class ClusterError(Exception):
    """A source that cannot be read: what was asked, what came back, what to do."""


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    """One device of a node as its ledger stood: a GPU, or the RAM as ``cpu``."""

    device: str
    name: str
    total_bytes: int
    used_bytes: int | None
    booked_bytes: int
    bookable_bytes: int
    runtime_bytes: int
    reserve_bytes: int
    pressure: str
    compute_capability: tuple[int, int] | None = None
    lost: bool = False

    @property
    def is_gpu(self) -> bool:
        return self.device != "cpu"


@dataclass(frozen=True, slots=True)
class RemoteModel:
    """A model a node holds."""

    model_id: str
    name: str
    model_type: str
    level: str
    device: str
    placement: str
    state: str
    pinned: bool
    #: (device, category, bytes) for each booking.
    booked: tuple[tuple[str, str, int], ...] = ()
    idle_s: float | None = None
    keep_alive_left_s: float | None = None
    #: (device, bytes) of the runtime context it needs on each of its devices.
    runtime: tuple[tuple[str, int], ...] = ()

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d for d, _, b in self.booked if b))

    def bytes_on(self, device: str) -> int:
        return sum(b for d, _, b in self.booked if d == device)

    @property
    def booked_bytes(self) -> int:
        return sum(b for _, _, b in self.booked)


@dataclass(frozen=True, slots=True)
class NodePolicy:
    """What a node's own planner is told by its settings."""

    make_room: bool = True
    quality_floor_ppl: float | None = None
    max_loaded_models: int | None = None


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """A node as last read: up or down, and when it was last seen (wall clock)."""

    node: str
    instance: str
    source: str
    up: bool
    last_seen: float | None
    devices: tuple[RemoteDevice, ...] = ()
    models: tuple[RemoteModel, ...] = ()
    version: str = ""
    #: Why the node is down or partly unreadable (None when all is well).
    error: str | None = None
    #: The node's placement settings, where its exporter says (None: this side's defaults).
    policy: NodePolicy | None = None

    @property
    def gpus(self) -> tuple[RemoteDevice, ...]:
        return tuple(d for d in self.devices if d.is_gpu)

    def models_on(self, device: str) -> tuple[RemoteModel, ...]:
        return tuple(m for m in self.models if device in m.devices)


# --- building a node from its series --------------------------------------------------------------
def _cc(text: str) -> tuple[int, int] | None:
    try:
        major, minor = text.split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def _int(value: float) -> int:
    return int(value) if value == value and abs(value) != float("inf") else 0


def node_from_samples(samples: Iterable[Sample], *, instance: str, source: str, up: bool,
                      last_seen: float | None = None, error: str | None = None) -> NodeSnapshot:
    """One node from the series its exporter served (names as exposed, counters with ``_total``)."""
    by_device: dict[str, dict[str, Any]] = {}
    gpu_used: dict[str, float] = {}
    gpu_info: dict[str, tuple[int, int] | None] = {}
    lost: set[str] = set()
    host_used: float | None = None
    info: dict[str, dict[str, str]] = {}
    pinned: dict[str, bool] = {}
    booked: dict[str, list[tuple[str, str, int]]] = {}
    idle: dict[str, float] = {}
    left: dict[str, float] = {}
    runtime: dict[str, list[tuple[str, int]]] = {}
    policy: dict[str, float] = {}
    node, version, stamp = instance, "", None
    fields = {"modeldeck_device_total_bytes": "total", "modeldeck_device_booked_bytes": "booked",
              "modeldeck_device_bookable_bytes": "bookable", "modeldeck_device_runtime_context_bytes": "runtime",
              "modeldeck_device_safety_reserve_bytes": "reserve", "modeldeck_device_pressure_level": "pressure"}
    for name, labels, value in samples:
        key = fields.get(name)
        if key is not None:
            row = by_device.setdefault(labels.get("device", ""), {"name": labels.get("name", "")})
            row[key] = value
        elif name == "modeldeck_gpu_memory_used_bytes":
            gpu_used[labels.get("device", "")] = value
        elif name == "modeldeck_gpu_info":
            gpu_info[labels.get("device", "")] = _cc(labels.get("compute_capability", ""))
        elif name == "modeldeck_gpu_lost" and value:
            lost.add(labels.get("device", ""))
        elif name == "modeldeck_host_memory_used_bytes":
            host_used = value
        elif name == "modeldeck_node_info":
            node, version = labels.get("node") or instance, labels.get("version", "")
        elif name == "modeldeck_scrape_timestamp_seconds":
            stamp = value if _SANE_TIME[0] < value < _SANE_TIME[1] else None
        elif name in ("modeldeck_node_make_room", "modeldeck_node_quality_floor_ppl",
                      "modeldeck_node_max_loaded_models"):
            if value == value and abs(value) != float("inf"):
                policy[name[len("modeldeck_node_"):]] = value
        elif name == "modeldeck_model_runtime_context_bytes":
            runtime.setdefault(labels.get("model", ""), []).append((labels.get("device", ""), _int(value)))
        elif name == "modeldeck_model_info":
            info[labels.get("model", "")] = dict(labels)
        elif name == "modeldeck_model_pinned":
            pinned[labels.get("model", "")] = bool(value)
        elif name == "modeldeck_model_booked_bytes":
            booked.setdefault(labels.get("model", ""), []).append(
                (labels.get("device", ""), labels.get("category", ""), _int(value)))
        elif name == "modeldeck_model_idle_seconds":
            idle[labels.get("model", "")] = value
        elif name == "modeldeck_model_keep_alive_remaining_seconds":
            left[labels.get("model", "")] = value
    devices = []
    for device, row in by_device.items():
        if "total" not in row:
            continue
        used = host_used if device == "cpu" else gpu_used.get(device)
        level = _int(row.get("pressure", 0))
        devices.append(RemoteDevice(
            device, row["name"], _int(row["total"]), None if used is None else _int(used), _int(row.get("booked", 0)),
            _int(row.get("bookable", 0)), _int(row.get("runtime", 0)), _int(row.get("reserve", 0)),
            _PRESSURE[min(max(level, 0), 3)], gpu_info.get(device), device in lost))
    devices.sort(key=lambda d: (not d.is_gpu, d.device))
    models = tuple(sorted((
        RemoteModel(mid, i.get("name", mid), i.get("type", ""), i.get("level", ""), i.get("device", ""),
                    i.get("placement", ""), i.get("state", ""), pinned.get(mid, False), tuple(booked.get(mid, ())),
                    idle.get(mid), left.get(mid), tuple(runtime.get(mid, ())))
        for mid, i in info.items()), key=lambda m: m.name.lower()))
    node_policy = None
    if policy:
        cap = policy.get("max_loaded_models")
        node_policy = NodePolicy(bool(policy.get("make_room", 1)), policy.get("quality_floor_ppl"),
                                 int(cap) if cap is not None and cap >= 0 else None)
    return NodeSnapshot(node, instance, source, up, last_seen if last_seen is not None else stamp, tuple(devices),
                        models, version, error, node_policy)


# --- sources ----------------------------------------------------------------------------------------
def _check_url(url: str, what: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError as err:
        raise ClusterError(f"{url!r} is not a valid URL ({err}); give the {what}, e.g. http://localhost:9090") \
            from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClusterError(f"{url!r} is not an http(s) URL; give the {what}, e.g. http://localhost:9090")
    return url.strip().rstrip("/")


def _get(url: str, timeout: float) -> bytes:
    """The body at ``url``, within ``timeout`` seconds in all (a server that trickles bytes is cut off,
    not waited for), at most :data:`MAX_BODY_BYTES`."""
    done = threading.Event()
    result: list[bytes | BaseException] = []

    def fetch() -> None:
        try:
            result.append(_read(url, timeout, done))
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            result.append(err)

    worker = threading.Thread(target=fetch, name="modeldeck-cluster-read", daemon=True)
    worker.start()
    worker.join(timeout + 0.25)  # the socket's own time limit usually ends a silent server's read first
    done.set()  # a read still going stops at its next chunk
    if not result:
        raise ClusterError(f"{_where(url)} did not answer within {timeout:g} s; is it overloaded, or not "
                           "an HTTP server?")
    answer = result[0]
    if isinstance(answer, BaseException):
        raise answer
    return answer


def _read(url: str, timeout: float, done: threading.Event) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - http(s) checked above
            chunks: list[bytes] = []
            size = 0
            while not done.is_set():
                chunk = answer.read1(64 * 1024)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ClusterError(f"{_where(url)} sent more than {MAX_BODY_BYTES // 2**20} MiB; not read")
            return b"".join(chunks)
    except urllib.error.HTTPError as err:
        detail = ""
        try:
            detail = json.loads(err.read(64 * 1024)).get("error", "")
        except (ValueError, OSError, AttributeError):
            pass
        finally:
            err.close()  # it holds the connection
        raise ClusterError(f"{_where(url)} answered HTTP {err.code}{': ' + detail if detail else ''}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise ClusterError(f"cannot reach {_where(url)}: {reason}; is it running, and is the URL right?") from err


def _where(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class ExporterSource:
    """One node read straight from its ``/metrics``; its last answer is kept for when it stops answering."""

    kind = "exporter"

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        base = _check_url(url, "exporter's URL")
        self.url = base if urllib.parse.urlsplit(base).path not in ("", "/") else base + "/metrics"
        self._timeout = timeout_s
        self._last: NodeSnapshot | None = None

    @property
    def instance(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc

    def fetch(self) -> tuple[NodeSnapshot, ...]:
        # Imported here: the dashboard starts without the exposition parser (and the email and http
        # modules it pulls in) until an exporter is read.
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = _get(self.url, self._timeout).decode("utf-8", "replace")
            samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
                       for s in family.samples]
        except ClusterError as err:
            return (self._down(str(err)),)
        except ValueError as err:  # the parser's complaint about a page that is not Prometheus text
            return (self._down(f"{self.url} is not a Prometheus metrics page: {err}"),)
        if not any(name == "modeldeck_node_info" for name, _, _ in samples):
            return (self._down(f"{self.url} serves metrics, but not ModelDeck's (no modeldeck_node_info)"),)
        node = node_from_samples(samples, instance=self.instance, source=self.url, up=True, last_seen=time.time())
        self._last = node
        return (node,)

    def _down(self, error: str) -> NodeSnapshot:
        last = self._last
        if last is None:
            return NodeSnapshot(self.instance, self.instance, self.url, False, None, error=error)
        return NodeSnapshot(last.node, last.instance, self.url, False, last.last_seen, last.devices, last.models,
                            last.version, error)


class PrometheusSource:
    """Every ModelDeck node a Prometheus server scrapes (optionally one job's).

    Up nodes are read as they are now. A node whose scrape fails (``up == 0``) or that is no longer
    scraped is read at the time of its last successful scrape within ``lookback``.
    """

    kind = "prometheus"

    def __init__(self, url: str, *, job: str | None = None, lookback: str = "1h",
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = _check_url(url, "Prometheus server's URL")
        self.job = job
        self.lookback = lookback
        self._timeout = timeout_s

    def _ask(self, expr: str, kind: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = _get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", self._timeout)
        try:
            doc = json.loads(body)
            if doc.get("status") != "success":
                raise ClusterError(f"Prometheus at {self.url} refused {expr!r}: {doc.get('error', 'no reason')}")
            data = doc["data"]
            if data["resultType"] != kind:
                raise ClusterError(f"Prometheus at {self.url} answered {data['resultType']} to {expr!r}")
            return list(data["result"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ClusterError(f"{self.url} does not answer like Prometheus's HTTP API ({err!r})") from err

    def _query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series."""
        try:
            return [(dict(r["metric"]), float(r["value"][1])) for r in self._ask(expr, "vector", at)]
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ClusterError(f"{self.url} does not answer like Prometheus's HTTP API ({err!r})") from err

    def _last_scrape(self, selector: str) -> float | None:
        """When Prometheus last scraped a node successfully, on Prometheus's own clock (a node's clock
        may be off: the node is then still read at a moment its series existed)."""
        try:
            rows = self._ask(f"modeldeck_scrape_timestamp_seconds{{{selector}}}[{self.lookback}]", "matrix")
            return max((float(r["values"][-1][0]) for r in rows if r["values"]), default=None)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ClusterError(f"{self.url} does not answer like Prometheus's HTTP API ({err!r})") from err

    def _selector(self, **extra: str) -> str:
        labels = {"job": self.job} if self.job else {}
        labels.update(extra)
        return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())

    def fetch(self) -> tuple[NodeSnapshot, ...]:
        sel = self._selector()
        seen = {(m.get("job", ""), m.get("instance", "")): v for m, v in
                self._query(f"last_over_time(modeldeck_scrape_timestamp_seconds{{{sel}}}[{self.lookback}])")}
        ups = {(m.get("job", ""), m.get("instance", "")): v for m, v in self._query(f"up{{{sel}}}")}
        now: dict[tuple[str, str], list[Sample]] = {}
        for m, v in self._query(f'{{__name__=~"{SERIES}"{"," + sel if sel else ""}}}'):
            now.setdefault((m.get("job", ""), m.get("instance", "")), []).append((m["__name__"], m, v))
        nodes = []
        for key in sorted(set(seen) | set(now)):
            job, instance = key
            last_seen = seen.get(key)
            if ups.get(key) == 1.0 and key in now:
                nodes.append(node_from_samples(now[key], instance=instance, source=self.url, up=True,
                                               last_seen=last_seen))
                continue
            error = ("the last scrape failed" if key in ups else "no longer scraped by Prometheus")
            samples: list[Sample] = []
            one = self._selector(job=job, instance=instance) if not self.job else self._selector(instance=instance)
            scraped = self._last_scrape(one) if last_seen is not None else None
            if scraped is not None:
                last_seen = scraped
                samples = [(m["__name__"], m, v) for m, v in
                           self._query(f'{{__name__=~"{SERIES}",{one}}}', at=scraped)]
            nodes.append(node_from_samples(samples, instance=instance, source=self.url, up=False,
                                           last_seen=last_seen, error=error))
        return tuple(sorted(nodes, key=lambda n: (n.node.lower(), n.instance)))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def sources_from(*, prometheus: Sequence[str] = (), exporters: Sequence[str] = ()) -> list[Any]:
    """Sources for URLs as a user gives them; a malformed URL raises :class:`ClusterError`."""
    if not prometheus and not exporters:
        raise ClusterError("no source given; name a Prometheus server (--prometheus URL) or an exporter "
                           "(--exporter URL)")
    return [PrometheusSource(u) for u in prometheus] + [ExporterSource(u) for u in exporters]


def unique_nodes(nodes: Iterable[NodeSnapshot]) -> tuple[NodeSnapshot, ...]:
    """One snapshot per node (name and address): a node read both through Prometheus and from its
    exporter is listed once, as the source that has it up (or was the most recent) says."""
    best: dict[tuple[str, str], NodeSnapshot] = {}
    for n in nodes:
        key = (n.node, n.instance)
        held = best.get(key)
        if held is None or (n.up, n.last_seen or 0.0) > (held.up, held.last_seen or 0.0):
            best[key] = n
    return tuple(sorted(best.values(), key=lambda n: (n.node.lower(), n.instance)))


def fetch_nodes(sources: Iterable[Any]) -> tuple[tuple[NodeSnapshot, ...], tuple[str, ...]]:
    """Every node of every source (each once), and one line per source that could not be read at all."""
    nodes: list[NodeSnapshot] = []
    errors: list[str] = []
    for source in sources:
        try:
            nodes.extend(source.fetch())
        except ClusterError as err:
            errors.append(str(err))
    return unique_nodes(nodes), tuple(errors)


# --- where would a model fit ---------------------------------------------------------------------------
#: What a node's answer means for the user, in the CLI and the Cluster tab alike.
FITS, MOVES, NO_FIT, DOWN = "fits", "fits after moving others", "does not fit", "node down"
#: Fits, but not whole on GPUs: slower, and a user should see it before choosing that node.
PARTIAL, CPU_ONLY = "fits partly in RAM", "fits on the CPU only"


@dataclass(frozen=True, slots=True)
class FitAnswer:
    """The planner's answer for one node (None while the node is down)."""

    node: NodeSnapshot
    outcome: Decision | Refusal | None

    @property
    def fits(self) -> bool:
        return isinstance(self.outcome, Decision)

    @property
    def disturbs(self) -> bool:
        return isinstance(self.outcome, Decision) and bool(self.outcome.actions)

    @property
    def verdict(self) -> str:
        """FITS, MOVES, PARTIAL, CPU_ONLY, NO_FIT or DOWN."""
        o = self.outcome
        if o is None:
            return DOWN
        if not isinstance(o, Decision):
            return NO_FIT
        if o.placement.kind == "partial":
            return PARTIAL
        if o.placement.kind == "cpu":
            return CPU_ONLY
        return MOVES if o.actions else FITS

    def summary(self) -> str:
        o = self.outcome
        if o is None:
            return "node is down: not considered"
        if isinstance(o, Refusal):
            return o.message()
        return o.describe()


def _placement_of(m: RemoteModel) -> Placement | None:
    """A whole-GPU model's placement as its bookings describe it (what the planner needs to move it)."""
    if m.placement != "gpu" or len(m.devices) != 1:
        return None
    device = m.devices[0]
    parts = {c: b for d, c, b in m.booked if d == device}
    share = Share(device, parts.get("weights", 0), parts.get("kv_cache", 0), parts.get("compute", 0),
                  dict(m.runtime).get(device, 0))
    estimate = MemoryEstimate(m.level, EstimateTerm(share.weights_bytes, "as booked on the node"),
                              EstimateTerm(share.kv_cache_bytes, "as booked on the node"),
                              EstimateTerm(share.compute_bytes, "as booked on the node"),
                              EstimateTerm(share.runtime_bytes, "as booked on the node"))
    return Placement(m.model_id, m.level, "gpu", (share,), estimate, "as loaded on the node")


def ledger_of(node: NodeSnapshot, settings: ManagerSettings | None = None, *, exclude: str | None = None
              ) -> LedgerView:
    """The planner's view of a node, as its own manager builds it: what each device can still book,
    and the models it holds. A model being planned again (``exclude``) counts as gone, its bytes free."""
    priority = (settings or ManagerSettings()).type_priority
    freed: dict[str, int] = {}
    holdings = []
    for m in node.models:
        per_device: dict[str, int] = {}
        for device, _, b in m.booked:
            per_device[device] = per_device.get(device, 0) + b
        if m.model_id == exclude:
            freed = per_device
            continue
        try:
            kind = ModelType(m.model_type)
        except ValueError:
            kind = ModelType.LLM
        weights = sum(b for _, c, b in m.booked if c == "weights")
        holdings.append(Holding(m.model_id, m.name, kind, priority.get(kind, 0), -(m.idle_s or 0.0), m.pinned,
                                m.state == "loaded", tuple(per_device.items()), weights, _placement_of(m)))
    rooms = tuple(DeviceRoom(d.device, d.name, 0 if d.lost else d.total_bytes,
                             0 if d.lost else d.bookable_bytes + freed.get(d.device, 0),
                             d.runtime_bytes, d.compute_capability, d.reserve_bytes) for d in node.devices)
    return LedgerView(rooms, tuple(holdings), now=0.0)


_LIVE = frozenset(s.value for s in LIVE_STATES)


def answer_on(node: NodeSnapshot, request: PlacementRequest, settings: ManagerSettings) -> Decision | Refusal:
    """What ``node`` would answer to ``request`` with its own settings (where it exports them): the
    planner on its ledger, then its cap on loaded models."""
    policy = node.policy or NodePolicy(settings.auto_swap, None, settings.max_loaded_models)
    floor = policy.quality_floor_ppl if policy.quality_floor_ppl is not None else settings.quality_floor_ppl
    request = dataclasses.replace(request, make_room=request.make_room and policy.make_room)
    ledger = ledger_of(node, settings, exclude=request.metadata.id)
    outcome = decide(request, ledger, Policy(settings.type_priority, floor))
    if isinstance(outcome, Refusal):
        return outcome
    loaded = sum(1 for m in node.models if m.state in _LIVE and m.model_id != request.metadata.id)
    return apply_cap(request, outcome, policy.max_loaded_models, loaded, lambda: ledger.holdings)


def where_fits(nodes: Iterable[NodeSnapshot], request: PlacementRequest | ModelMetadata, *,
               settings: ManagerSettings | None = None) -> tuple[FitAnswer, ...]:
    """The planner's answer to ``request`` on every node: fits as things are (whole on a GPU, then split,
    then partly in RAM, then on the CPU; most GPU room left first), then fits after moving others,
    then refused; down nodes last. Build the request with the local
    manager's ``request()`` so levels are named as the planner names them."""
    settings = settings or ManagerSettings()
    if isinstance(request, ModelMetadata):
        request = PlacementRequest(request)
    answers = []
    for node in unique_nodes(nodes):
        answers.append(FitAnswer(node, answer_on(node, request, settings) if node.up else None))

    kinds = {"gpu": 0, "split": 1, "partial": 2, "cpu": 3}

    def rank(a: FitAnswer) -> tuple[int, int, int, int]:
        o = a.outcome
        if o is None:
            return (3, 0, 0, 0)
        if isinstance(o, Refusal):
            return (2, 0, 0, o.needed_bytes - o.available_bytes)
        # Whole on a GPU before split, split before partly in RAM; then the most GPU room left after it.
        room = {d.device: d.bookable_bytes for d in a.node.devices if d.is_gpu}
        left = sum(room.get(s.device, 0) - s.own_bytes for s in o.placement.shares if s.device in room)
        return (1 if o.actions else 0, kinds.get(o.placement.kind, 4), 0, -left)

    return tuple(sorted(answers, key=rank))


# --- documents ---------------------------------------------------------------------------------------------
def _ago(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    age = max(0.0, time.time() - stamp)
    try:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    except (OverflowError, OSError, ValueError):
        return "at a time the node could not state"
    if age < 120:
        return f"{when} ({age:.0f} s ago)"
    if age < 7200:
        return f"{when} ({age / 60:.0f} min ago)"
    return f"{when} ({age / 3600:.1f} h ago)"


def cluster_document(nodes: Iterable[NodeSnapshot], errors: Iterable[str] = ()) -> dict[str, Any]:
    """``modeldeck status --prometheus URL --json``: nodes, their devices and models (bytes), and source errors."""
    out = []
    for n in nodes:
        out.append({
            "node": n.node, "instance": n.instance, "source": n.source, "up": n.up, "last_seen": n.last_seen,
            "last_seen_text": _ago(n.last_seen), "version": n.version, "error": n.error,
            "devices": [{"device": d.device, "name": d.name, "total_bytes": d.total_bytes, "used_bytes": d.used_bytes,
                         "booked_bytes": d.booked_bytes, "bookable_bytes": d.bookable_bytes,
                         "runtime_bytes": d.runtime_bytes, "reserve_bytes": d.reserve_bytes, "pressure": d.pressure,
                         "lost": d.lost} for d in n.devices],
            "models": [{"model_id": m.model_id, "name": m.name, "type": m.model_type, "level": m.level,
                        "device": m.device, "devices": list(m.devices), "placement": m.placement, "state": m.state,
                        "pinned": m.pinned, "booked_bytes": m.booked_bytes, "idle_s": m.idle_s,
                        "keep_alive_left_s": m.keep_alive_left_s} for m in n.models],
        })
    return {"nodes": out, "errors": list(errors)}


def fit_document(answers: Iterable[FitAnswer]) -> list[dict[str, Any]]:
    """The ``fits`` part of ``modeldeck plan MODEL --prometheus URL --json``."""
    out = []
    for a in answers:
        o = a.outcome
        row: dict[str, Any] = {"node": a.node.node, "instance": a.node.instance, "up": a.node.up, "fits": a.fits,
                               "verdict": a.verdict, "summary": a.summary()}
        row["plan"] = o.to_dict() if o is not None else None
        out.append(row)
    return out

