"""The oracle suite: ModelDeck's estimates against llama.cpp itself (llama-cpp-python).

Skipped as a whole when llama_cpp cannot be imported; the log parser's own tests run regardless.
One ``Oracle`` per session writes the tiny models into a temporary folder and quantizes each one
the first time a test asks for it.
"""

from __future__ import annotations

import pytest

from tests.oracle._oracle import Oracle


@pytest.fixture(scope="session")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    try:
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: the llama.cpp oracle cannot run")
    except OSError as exc:  # installed, but its shared library does not load
        pytest.skip(f"llama-cpp-python's library does not load: {exc}")
    return Oracle(tmp_path_factory.mktemp("oracle"))
