"""RingBuffer properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.sampler import RingBuffer

values = st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=300)


@given(capacity=st.integers(1, 64), xs=values, n=st.integers(0, 400))
def test_keeps_the_newest_capacity_values_in_order(capacity, xs, n):
    ring = RingBuffer(capacity)
    for x in xs:
        ring.append(x)
    kept = xs[-capacity:] if xs else []
    assert len(ring) == len(kept)
    assert ring.latest().tolist() == kept
    older, newer = ring.segments()
    assert np.concatenate((older, newer)).tolist() == kept
    want = kept[len(kept) - min(n, len(kept)):]
    assert ring.latest(n).tolist() == want
    if kept:
        assert ring.last() == kept[-1]
    else:
        assert math.isnan(ring.last())


@given(capacity=st.integers(1, 32), xs=values)
def test_segments_are_views_not_copies(capacity, xs):
    ring = RingBuffer(capacity)
    for x in xs:
        ring.append(x)
    for seg in ring.segments():
        assert seg.base is not None  # a view of the storage
        assert not seg.flags.writeable


def test_none_is_stored_as_nan_and_capacity_is_checked():
    ring = RingBuffer(3, np.float32)
    ring.append(None)
    ring.append(1.5)
    out = ring.latest()
    assert math.isnan(out[0]) and out[1] == 1.5 and out.dtype == np.float32
    with pytest.raises(ValueError, match="at least 1"):
        RingBuffer(0)


def test_latest_does_not_copy_everything():
    ring = RingBuffer(86_400)
    for i in range(100_000):
        ring.append(i)
    tail = ring.latest(10)
    assert tail.tolist() == list(range(99_990, 100_000))
    assert tail.nbytes == 80
