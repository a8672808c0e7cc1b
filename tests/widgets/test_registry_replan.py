"""The registry table plans again only when memory really moved, and repaints only rows that changed:
the idle dashboard does not re-plan every model when a GPU's usage wobbles around a boundary."""

from __future__ import annotations

import dataclasses

from app.core.units import MiB
from app.widgets.registry_table_model import PLAN_GRANULARITY, RegistryTableModel


def with_free(profile, gpu_index: int, free: int):
    gpus = list(profile.gpus)
    g = gpus[gpu_index]
    gpus[gpu_index] = dataclasses.replace(g, used_bytes=g.total_bytes - free, free_bytes=free)
    return dataclasses.replace(profile, gpus=tuple(gpus))


def planned_rows(model: RegistryTableModel) -> None:
    for row in range(model.rowCount()):  # what a view does when it paints every row
        model.data(model.index(row, RegistryTableModel.FIT))


def test_a_wobble_around_a_boundary_does_not_replan(qtbot, registry, sampler):
    model = RegistryTableModel(registry)
    base = with_free(sampler.latest, 0, 10 * 1024 * MiB + PLAN_GRANULARITY // 2)
    model.set_profile(base)
    planned_rows(model)
    for step in (-1, 1, -1, 1):  # ±200 MiB: across a 256 MiB boundary each time
        wobble = with_free(base, 0, base.gpus[0].free_bytes + step * 200 * MiB)
        assert model.set_profile(wobble) is False
    moved = with_free(base, 0, base.gpus[0].free_bytes - 3 * 1024 * MiB)
    assert model.set_profile(moved) is True


def test_only_rows_whose_cells_changed_are_repainted(qtbot, registry, sampler):
    model = RegistryTableModel(registry)
    full = with_free(sampler.latest, 0, 20 * 1024 * MiB)
    model.set_profile(full)
    planned_rows(model)
    changed: list[tuple[int, int]] = []
    model.dataChanged.connect(lambda a, b, *_: changed.append((a.row(), b.row())))
    # Memory moved a little more than the granularity: plans are made again, but no fit, level or
    # size cell of a small model changes, so nothing is repainted for them.
    nudged = with_free(full, 0, 20 * 1024 * MiB - 2 * PLAN_GRANULARITY)
    assert model.set_profile(nudged) is True
    rows_now = {r for a, b in changed for r in range(a, b + 1)}
    assert len(rows_now) < model.rowCount() // 2
    # Much less free memory: the big models' fit changes, and those rows are repainted.
    changed.clear()
    tight = with_free(full, 0, 3 * 1024 * MiB)
    assert model.set_profile(tight) is True
    rows_tight = {r for a, b in changed for r in range(a, b + 1)}
    assert rows_tight, "a fit that changed must be repainted"
    for row in rows_tight:
        assert model.data(model.index(row, RegistryTableModel.FIT)) is not None
