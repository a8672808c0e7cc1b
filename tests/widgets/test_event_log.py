"""EventLog: newest last, and a flood of the same news is one line with a count and its time span."""

from __future__ import annotations

import pytest

from app.core.memory_allocator import PressureLevel
from app.widgets.event_log import EventLog


@pytest.fixture
def log(qtbot, clock):
    view = EventLog(clock=clock)
    qtbot.addWidget(view)
    return view


def _text(line: str) -> str:
    return line.split("  ", 1)[1]


def test_pressure_flip_flops_are_one_line(log, clock):
    for i in range(12):
        clock.advance(15.0)
        log.append_pressure("cuda:0", PressureLevel.ELEVATED if i % 2 == 0 else PressureLevel.OK)
    assert [_text(x) for x in log.lines()] == ["cuda:0 memory pressure ok ↔ elevated ×12 in 3 min, now ok"]


def test_first_change_reads_as_before_and_devices_have_their_own_lines(log, clock):
    log.append_pressure("cuda:0", PressureLevel.ELEVATED)
    clock.advance(5.0)
    log.append_pressure("cuda:1", "high")
    assert [_text(x) for x in log.lines()] == ["cuda:0 memory pressure is now elevated",
                                               "cuda:1 memory pressure is now high"]
    clock.advance(120.0)
    log.append_pressure("cuda:0", PressureLevel.OK)
    # The grouped line moves to the bottom: the log stays newest last.
    assert [_text(x) for x in log.lines()] == ["cuda:1 memory pressure is now high",
                                               "cuda:0 memory pressure ok ↔ elevated ×2 in 2 min, now ok"]


def test_repeated_messages_collapse_and_others_do_not(log, clock):
    for _ in range(3):
        log.append("llama3 is loaded")
        clock.advance(30.0)
    log.append("llama3 is unloaded")
    assert [_text(x) for x in log.lines()] == ["llama3 is loaded ×3 in 60 s", "llama3 is unloaded"]
    clock.advance(EventLog.GROUP_S + 1)
    log.append("llama3 is loaded")  # long after: a new line
    assert len(log.lines()) == 3 and _text(log.lines()[-1]) == "llama3 is loaded"


def test_a_message_with_line_breaks_is_one_line(log):
    log.append("load failed:\nout of memory\n")
    assert [_text(x) for x in log.lines()] == ["load failed: · out of memory"]


def test_bridge_pressure_events_are_grouped(qtbot, clock, sampler, registry):
    from app.core.model_resource_manager import ModelResourceManager
    from app.widgets.bridge import CoreBridge

    manager = ModelResourceManager(profiler=sampler._profiler, registry=registry, clock=clock)
    bridge = CoreBridge(manager=manager)
    view = EventLog(bridge, clock=clock)
    qtbot.addWidget(view)
    for level in ("elevated", "ok", "elevated", "ok"):
        bridge.sigPressureChanged.emit("cuda:0", PressureLevel(level))
    assert [_text(x) for x in view.lines()] == ["cuda:0 memory pressure ok ↔ elevated ×4 in 0 s, now ok"]
    bridge.close()


def test_the_log_keeps_its_last_lines_in_step(log):
    for i in range(EventLog.MAX_LINES + 5):
        log.append(f"event {i}")
    lines = log.lines()
    assert len(lines) == EventLog.MAX_LINES and _text(lines[0]) == "event 5"
    log.append("event 10")  # in the middle: moved to the bottom with its count
    assert _text(log.lines()[-1]) == "event 10 ×2 in 0 s" and len(log.lines()) == EventLog.MAX_LINES
    assert "event 10" not in [_text(x) for x in log.lines()[:-1]]
