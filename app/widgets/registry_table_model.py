"""RegistryTableModel: the registry's models as rows, with the level that fits the chosen device.

Answers come from the core's planner (``ViewPlanner.best``: as things are, touching no other
model) and are computed lazily for the rows the view asks
about, then cached. Free memory changes every second, so the cache is only dropped when the
chosen device's free memory moved by more than ``PLAN_GRANULARITY`` (or the devices changed):
the table stays truthful without re-planning every model on every sample.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.placement import Decision, Refusal
from app.core.quantization_strategy import EstimateUnavailable, QuantizationStrategy
from app.core.units import GiB, format_gib
from app.widgets.planning import Answer, ViewPlanner, kind_of

__all__ = ["RegistryTableModel", "FIT_LABELS", "type_label", "params_label"]

_log = logging.getLogger(__name__)

PLAN_GRANULARITY = 256 * 1024 * 1024

#: placement -> (badge text, colour, tooltip prefix)
FIT_LABELS: dict[str, tuple[str, QColor]] = {
    "gpu": ("fits", QColor(22, 163, 74, 70)),
    "split": ("fits (split)", QColor(22, 163, 74, 50)),
    "partial": ("partial", QColor(202, 138, 4, 80)),
    "lighter": ("fits*", QColor(202, 138, 4, 55)),
    "cpu": ("CPU only", QColor(59, 130, 246, 60)),
    "none": ("no", QColor(220, 38, 38, 70)),
}
_TYPE_LABELS = {
    "llm": "LLM", "text_to_image": "Text → image", "text_to_speech": "Text → speech",
    "speech_to_text": "Speech → text", "text_to_video": "Text → video", "embedding": "Embedding",
}

_Index = QModelIndex | QPersistentModelIndex


def type_label(value: str) -> str:
    return _TYPE_LABELS.get(value, value)


def params_label(n: int | None) -> str:
    if not n:
        return "?"
    if n >= 0.95e9:
        return f"{n / 1e9:.1f} B"
    return f"{n / 1e6:.0f} M"


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row numbers as (first, last) runs of consecutive rows."""
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and runs[-1][1] == r - 1:
            runs[-1] = (runs[-1][0], r)
        else:
            runs.append((r, r))
    return runs


def _moved(before: tuple[Any, ...] | None, now: tuple[Any, ...] | None) -> bool:
    """Whether plans made at ``before`` may be wrong at ``now`` (see ``RegistryTableModel.set_profile``)."""
    if before is None or now is None:
        return before is not now
    (gpus_a, host_a, device_a), (gpus_b, host_b, device_b) = before, now
    if device_a != device_b or [g[:2] for g in gpus_a] != [g[:2] for g in gpus_b]:
        return True
    return (abs(host_a - host_b) > 4 * PLAN_GRANULARITY
            or any(abs(a[2] - b[2]) > PLAN_GRANULARITY for a, b in zip(gpus_a, gpus_b, strict=True)))


class RegistryTableModel(QAbstractTableModel):
    """One row per registered model; columns name, type, provider, parameters, best level, size, fit."""

    COLUMNS = ("Name", "Type", "Provider", "Parameters", "Best level", "Size", "Fit")
    NAME, TYPE, PROVIDER, PARAMS, LEVEL, SIZE, FIT = range(7)
    ModelIdRole = int(Qt.ItemDataRole.UserRole) + 1
    SortRole = int(Qt.ItemDataRole.UserRole) + 2
    MetadataRole = int(Qt.ItemDataRole.UserRole) + 3

    def __init__(self, registry: Any, planner: ViewPlanner | QuantizationStrategy | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._registry = registry
        self._planner = planner if isinstance(planner, ViewPlanner) else ViewPlanner(registry, strategy=planner)
        self._rows: list[Any] = []
        self._plans: dict[str, Answer | str] = {}
        self._profile: HardwareProfile | None = None
        self._device: str | None = None
        self._signature: tuple[Any, ...] | None = None
        self.reload()

    # --- inputs --------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the registry (after ``registry_changed``)."""
        self.beginResetModel()
        self._rows = sorted(self._registry.list_models(), key=lambda m: m.name.lower())
        self._plans.clear()
        self.endResetModel()

    def set_profile(self, profile: HardwareProfile | None) -> bool:
        """New hardware figures; plans are dropped only when they could have changed (True then):
        a device appeared, went or was lost, or its free memory moved more than ``PLAN_GRANULARITY``
        since the plans were made (a wobble around a boundary does not re-plan every model)."""
        self._profile = profile
        if profile is not None:
            self._planner.observe(profile)
        signature = self._signature_of(profile)
        if not _moved(self._signature, signature):
            return False
        self._signature = signature
        self._invalidate()
        return True

    def set_device(self, device: str | None) -> None:
        """``cuda:N``, ``cpu``, or ``None`` for the GPU with most free memory."""
        if device != self._device:
            self._device = device
            self._signature = self._signature_of(self._profile)
            self._invalidate()

    @property
    def device(self) -> str | None:
        return self._device

    @property
    def planner(self) -> ViewPlanner:
        return self._planner

    def _signature_of(self, profile: HardwareProfile | None) -> tuple[Any, ...] | None:
        if profile is None:
            return None
        gpus = tuple((g.device_id, g.lost, g.free_bytes) for g in profile.gpus)
        return gpus, profile.host.available_bytes, self._device

    def invalidate_plans(self) -> None:
        """Plan again on next paint (a manager booked or released memory)."""
        self._invalidate()

    def _invalidate(self) -> None:
        """Plan again the rows planned before (those a view asked for) and repaint only the rows whose
        level, size or fit changed; the others are planned when first shown."""
        old, self._plans = self._plans, {}
        changed = []
        for row, meta in enumerate(self._rows):
            before = old.get(meta.id)
            if before is None:
                continue
            after = self._plans[meta.id] = self._compute(meta)
            if self._cells_of(before) != self._cells_of(after):
                changed.append(row)
        for first, last in _runs(changed):
            self.dataChanged.emit(self.index(first, self.LEVEL), self.index(last, self.FIT))

    def _cells_of(self, plan: Answer | str) -> tuple[str, ...]:
        """What the level, size and fit cells show for a plan."""
        if not isinstance(plan, (Decision, Refusal)):
            return ("–",)
        estimate = plan.placement.estimate if isinstance(plan, Decision) else plan.estimate
        return (plan.level or "–", format_gib(estimate.total_bytes) if estimate else "–", self._fit_kind(plan))

    def _fit_kind(self, plan: Answer | None) -> str:
        """The Fit cell's kind: the placement's, or "lighter" when it fits only with lighter runtime settings."""
        if isinstance(plan, Decision) and self._planner.lighter_label(plan.placement.model_id):
            return "lighter"
        return kind_of(plan)

    # --- lookups -------------------------------------------------------------------------------
    def metadata_at(self, row: int) -> Any:
        return self._rows[row]

    def row_of(self, model_id: str) -> int:
        return next((i for i, m in enumerate(self._rows) if m.id == model_id), -1)

    def plan_for(self, row: int) -> Answer | None:
        """The planner's answer for a row on the chosen device (a Decision, or a Refusal with its
        numbers); None when it cannot be estimated."""
        meta = self._rows[row]
        plan = self._plans.get(meta.id)
        if plan is None:
            plan = self._plans[meta.id] = self._compute(meta)
        return plan if isinstance(plan, (Decision, Refusal)) else None

    def plan_problem(self, row: int) -> str | None:
        """Why a row has no answer (no hardware yet, no size known …)."""
        self.plan_for(row)
        value = self._plans.get(self._rows[row].id)
        return value if isinstance(value, str) else None

    def _compute(self, meta: Any) -> Answer | str:
        if self._profile is None:
            return "waiting for the first hardware sample"
        try:
            return self._planner.best(meta, self._device)
        except EstimateUnavailable as err:
            return str(err)
        except Exception as err:  # noqa: BLE001 - one bad entry must not break the table
            _log.warning("cannot plan %s: %s", meta.id, err)
            return str(err)

    # --- Qt model ------------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return _HEADER_TIPS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        meta = self._rows[row]
        if role == self.ModelIdRole:
            return meta.id
        if role == self.MetadataRole:
            return meta
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(row, col, meta)
        if role == self.SortRole:
            return self._sort_key(row, col, meta)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, col, meta)
        if role == Qt.ItemDataRole.BackgroundRole and col == self.FIT:
            plan = self.plan_for(row)
            return FIT_LABELS[self._fit_kind(plan)][1] if plan else None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.PARAMS, self.SIZE):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.TextAlignmentRole and col == self.FIT:
            return int(Qt.AlignmentFlag.AlignCenter)
        return None

    def _display(self, row: int, col: int, meta: Any) -> str:
        if col == self.NAME:
            return f"{meta.name} (user override)" if self._is_override(meta) else meta.name
        if col == self.TYPE:
            return type_label(meta.model_type.value)
        if col == self.PROVIDER:
            return meta.provider_name
        if col == self.PARAMS:
            return params_label(meta.parameter_count)
        plan = self.plan_for(row)
        if plan is None:
            return "–"
        estimate = plan.placement.estimate if isinstance(plan, Decision) else plan.estimate
        if col == self.LEVEL:
            return plan.level or "–"
        if col == self.SIZE:
            return format_gib(estimate.total_bytes) if estimate else "–"
        return FIT_LABELS[self._fit_kind(plan)][0]

    def _is_override(self, meta: Any) -> bool:
        """A user entry standing in for a built-in (a registry without overrides has none)."""
        check = getattr(self._registry, "is_override", None)
        return meta.origin != "builtin" and check is not None and bool(check(meta.id))

    def _sort_key(self, row: int, col: int, meta: Any) -> Any:
        if col == self.PARAMS:
            return float(meta.parameter_count or 0)
        if col in (self.LEVEL, self.SIZE, self.FIT):
            plan = self.plan_for(row)
            if col == self.SIZE:
                est = (plan.placement.estimate if isinstance(plan, Decision) else plan.estimate) if plan else None
                return float(est.total_bytes) if est else -1.0
            if col == self.FIT:
                return ("gpu", "split", "lighter", "partial", "cpu", "none").index(self._fit_kind(plan)) if plan else 9
        return self._display(row, col, meta).lower()

    def _tooltip(self, row: int, col: int, meta: Any) -> str | None:
        if col == self.NAME:
            override = ("\nuser override of a built-in: delete it to bring the built-in back"
                        if self._is_override(meta) else "")
            return f"{meta.id}" + (" (approximate size)" if meta.approximate else "") + override
        if col in (self.LEVEL, self.SIZE, self.FIT):
            plan = self.plan_for(row)
            if plan is None:
                return self.plan_problem(row)
            est = plan.placement.estimate if isinstance(plan, Decision) else plan.estimate
            if col == self.SIZE:
                return "\n".join(est.explain()) if est else plan.reason
            if isinstance(plan, Decision):
                lighter = self._planner.lighter_label(plan.placement.model_id)
                return f"fits {lighter} (the runtime's defaults do not fit): {plan.reason}" if lighter else plan.reason
            return plan.message()
        if col == self.PARAMS and meta.parameter_count:
            exact = "exact" if meta.parameters_exact else "approximate, from the size"
            return f"{meta.parameter_count:,} parameters ({exact})"
        return None


_HEADER_TIPS = (
    "The model's name; hover a row for its id.",
    "What the model does.",
    "Who publishes the model family.",
    "Parameter count in billions (B) or millions (M).",
    "The best-quality quantization that fits the chosen device now, beside what is loaded, keeping the safety margin.",
    f"Estimated memory at that level: weights + KV cache + compute + runtime overhead (GiB = {GiB:,} bytes).",
    "fits: whole on the GPU; fits*: on the GPU with lighter runtime settings (hover for which); partial: some "
    "layers in RAM; CPU only: runs from RAM; no: does not fit.",
)
