"""Admission: a load request becomes the lifecycle's load operation.

The planner's decision (or a placement chosen earlier, re-validated when it is booked), with the
cap on loaded models applied as one more named action; and, for a restore, the room the policy
may make. Also the guard that refuses a sync call meeting an async loader inside a running loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.manager.calls import Op
from app.core.manager.errors import PlacementRefused
from app.core.manager.eviction import eviction_order
from app.core.manager.lifecycle import ModelState
from app.core.manager.loaders import AsyncLoaderInSyncCall, ModelLoader, is_async, running_loop
from app.core.manager.operations import Lifecycle
from app.core.manager.placement import Action, Decision, Holding, LedgerView, Placement, PlacementRequest, Refusal
from app.core.manager.settings import ManagerSettings

__all__ = ["Admission", "LIVE_STATES", "SyncGuard", "apply_cap"]

#: States that count towards the cap on loaded models.
LIVE_STATES = (ModelState.LOADED, ModelState.BUSY, ModelState.LOADING, ModelState.RESTORING, ModelState.MOVING)


class Admission:
    def __init__(self, life: Lifecycle, settings: ManagerSettings,
                 decide: Callable[[PlacementRequest], Decision | Refusal],
                 ledger_view: Callable[[], LedgerView], announce: Callable[[Decision], None]) -> None:
        self._life = life
        self._settings = settings
        self._decide = decide
        self._ledger_view = ledger_view
        self._announce = announce

    def load_op(self, req: PlacementRequest, *, level_given: bool, pin: bool, keep_alive_s: float | None,
                placement: Placement | Decision | None) -> Op:
        """The operation that loads ``req`` (or the ``placement`` shown earlier for that model)."""
        meta = req.metadata
        given: Decision | None = None
        if placement is not None:
            given = placement if isinstance(placement, Decision) else Decision(placement)
            if given.placement.model_id != meta.id:
                raise ValueError(f"the placement is for {given.placement.model_id}, not {meta.id}")
            req = PlacementRequest(meta, given.placement.level, None, given.placement.context, req.make_room)

        def choose() -> Decision | Refusal:
            answer = given if given is not None else self._decide(req)
            return self.with_cap(req, answer) if isinstance(answer, Decision) else answer

        keep = self._settings.keep_alive_s if keep_alive_s is None else keep_alive_s
        return self._life.load(meta, choose, level=req.level, pin=pin, keep_alive_s=keep,
                               preferred=req.level if level_given else None, announce=self._announce,
                               device=req.device)

    def with_cap(self, req: PlacementRequest, decision: Decision) -> Decision:
        """Prepend unloading the least valuable model when the cap on loaded models is reached."""
        outcome = apply_cap(req, decision, self._settings.max_loaded_models, self.loaded_count(),
                            lambda: self._ledger_view().holdings)
        if isinstance(outcome, Refusal):
            raise PlacementRefused(outcome)
        return outcome

    def loaded_count(self) -> int:
        return sum(1 for r in self._life.records.values() if r.state in LIVE_STATES)

    def restore_room(self, req: PlacementRequest, allowed: bool) -> Callable[[Placement], Any]:
        """For a restore: the actions that make room for the model's own placement again, a refusal, or None."""
        def make_room(placement: Placement) -> Any:
            if not allowed:
                return None
            ask = PlacementRequest(req.metadata, placement.level,
                                   placement.home_device if placement.kind == "gpu" else None, placement.context)
            answer = self._decide(ask)
            if isinstance(answer, Decision) and answer.placement.devices == placement.devices:
                return answer.actions
            return answer if isinstance(answer, Refusal) else None
        return make_room


def apply_cap(req: PlacementRequest, decision: Decision, cap: int | None, loaded: int,
              holdings: Callable[[], tuple[Holding, ...]]) -> Decision | Refusal:
    """The cap on loaded models, on top of the planner's decision: with ``loaded`` models at the cap,
    unloading the least valuable idle, unpinned one comes first; a refusal when every one is pinned or
    busy. Pure: the manager applies it to its own holdings, the cluster view to a node's."""
    if cap is None or loaded < cap:
        return decision
    meta = req.metadata
    gone = {a.model_id for a in decision.actions if a.kind == "unload"}
    order = [h for h in eviction_order(holdings(), exclude=meta.id) if h.model_id not in gone]
    if not order:
        return Refusal(meta.id, decision.placement.level, None, 0, 0,
                       f"{cap} models are loaded (the cap) and all are pinned or busy",
                       ("unload one, or raise max_loaded_models",))
    h = order[0]
    action = Action("unload", h.model_id, h.name, h.bytes_by_device[0][0] if h.bytes_by_device else "",
                    None, h.total_bytes, f"the cap of {cap} loaded models was reached and {meta.name} was "
                    "asked for; chosen as the least valuable")
    return Decision(decision.placement, (action, *decision.actions))


class SyncGuard:
    """Refuses a sync call that would need an async loader inside a running loop, before any change."""

    def __init__(self) -> None:
        self._seen: tuple[object, frozenset[str]] = (None, frozenset())

    def check(self, loader: ModelLoader, *names: str) -> None:
        if self._seen[0] is not loader:
            self._seen = (loader, frozenset(n for n in ("load", "unload", "offload", "restore")
                                            if callable(getattr(loader, n, None)) and is_async(getattr(loader, n))))
        if not self._seen[1] or running_loop() is None:
            return
        for name in names:
            if name in self._seen[1]:
                raise AsyncLoaderInSyncCall(f"the loader's {name}() is async and an event loop is running: "
                                            f"use the manager's a{name}() from the loop")
