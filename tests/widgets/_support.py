"""Helpers shared by the widget tests."""

from __future__ import annotations


def make_sampler(clock, spec: str = "rtx4090,rtx3060", samples: int = 120):
    from app.core.sampler import Sampler
    from app.demo import demo_profiler

    sampler = Sampler(demo_profiler(spec, clock), interval_s=1.0, clock=clock, capacity=4096)
    for _ in range(samples):
        sampler.tick()
        clock.advance(1.0)
    return sampler


def png_of(widget, size: tuple[int, int]) -> bytes:
    """The widget rendered at ``size`` as PNG bytes."""
    from PySide6.QtCore import QBuffer, QIODevice
    from PySide6.QtWidgets import QApplication

    widget.resize(*size)
    widget.show()
    QApplication.processEvents()
    image = widget.grab().toImage()
    assert image.devicePixelRatio() == 1.0
    assert (image.width(), image.height()) == size
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(buffer.data().data())
