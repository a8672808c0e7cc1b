"""The log parser of tests/oracle/_llama.py, on lines as llama.cpp prints them (no llama_cpp needed)."""

from __future__ import annotations

import pytest

from tests.oracle._llama import Buffer, KVCacheInfo, Log, MiB, kv_row_bytes, parse_buffer_line, parse_kv_cache_line


@pytest.mark.parametrize(("line", "kind", "device", "mib", "digits"), [
    ("load_tensors:   CPU_Mapped model buffer size =     2.06 MiB", "model", "CPU_Mapped", 2.06, 2),
    ("load_tensors:        CUDA0 model buffer size =  4403.49 MiB", "model", "CUDA0", 4403.49, 2),
    ("llama_context:        CPU  output buffer size =     0.49 MiB", "output", "CPU", 0.49, 2),
    ("llama_kv_cache:        CPU KV buffer size =     0.25 MiB", "kv", "CPU", 0.25, 2),
    ("sched_reserve:        CPU compute buffer size =     9.38 MiB", "compute", "CPU", 9.38, 2),
    ("llama_context:  CUDA_Host compute buffer size =    24.01 MiB", "compute", "CUDA_Host", 24.01, 2),
])
def test_buffer_lines(line, kind, device, mib, digits):
    b = parse_buffer_line(line)
    assert b == Buffer(kind, device, round(mib * MiB), int(0.5 * 10**-digits * MiB) + 1)
    assert b.covers(round((mib + 0.0049) * MiB)) and not b.covers(round((mib + 0.0051) * MiB))


def test_the_figure_printed_when_a_context_is_freed_has_four_decimals():
    b = parse_buffer_line("~llama_context:        CPU compute buffer size is   9.3848 MiB, matches expectation "
                          "of   9.3848 MiB")
    assert b is not None and b.final and b.kind == "compute" and b.device == "CPU"
    assert b.bytes == round(9.3848 * MiB) and b.resolution == int(0.00005 * MiB) + 1


@pytest.mark.parametrize("line", [
    "llama_kv_cache: size =    0.25 MiB (   512 cells,   2 layers,  1/1 seqs), K (f16):    0.12 MiB, "
    "V (f16):    0.12 MiB",
    "print_info: file size   = 2.06 MiB (6.18 BPW) ",
    "llama_context: n_ctx                 = 512",
    "load_tensors: loading model tensors, this can take a while... (load_mode = mmap)",
    "",
])
def test_other_lines_are_not_buffers(line):
    assert parse_buffer_line(line) is None


def test_kv_cache_lines():
    info = parse_kv_cache_line("llama_kv_cache: size =    1.20 MiB (   768 cells,   4 layers,  1/1 seqs), "
                               "K (q8_0):    0.60 MiB, V (q8_0):    0.60 MiB")
    assert info == KVCacheInfo(cells=768, layers=4, seqs=1, type_k="q8_0", type_v="q8_0")
    assert parse_kv_cache_line("llama_kv_cache:        CPU KV buffer size =     0.25 MiB") is None


def test_a_log_sums_devices_and_rounding():
    log = Log(["llama_kv_cache:        CPU KV buffer size =     3.19 MiB",
               "llama_kv_cache:      CUDA0 KV buffer size =     1.20 MiB",
               "sched_reserve:        CPU compute buffer size =     7.52 MiB"])
    kv = log.total("kv")
    assert kv is not None and kv.device == "CPU+CUDA0" and kv.bytes == round(3.19 * MiB) + round(1.20 * MiB)
    assert kv.resolution == 2 * (int(0.005 * MiB) + 1)
    assert log.total("output") is None
    assert [b.kind for b in log.buffers] == ["kv", "kv", "compute"]


def test_row_sizes_are_ggml_row_size():
    assert kv_row_bytes("f16", 128) == 256
    assert kv_row_bytes("q8_0", 128) == 4 * 34
    assert kv_row_bytes("q4_0", 96) == 3 * 18
