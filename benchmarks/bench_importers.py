"""Figures for the importers: 1,000 GGUF headers through `scan_path` and through `read_gguf`.

Run: .venv/bin/python benchmarks/bench_importers.py [--files N] [--keep DIR]
Target (issue: importers): 1,000 headers <= 5 s.

Each file is a realistic llama-style GGUF header (30-200 tensors with real shapes and Q4_K_M-style
types, llama keys, a 2,000-6,000 token vocabulary with scores and types) written by
gguf.GGUFWriter. The tensor data is left as a sparse hole (the file is extended with truncate), so
the files have their real sizes on paper but take almost no disk: the importers never read it.
Timings are with the files in the page cache (just written).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _nbytes(shape: tuple[int, ...], qtype) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def write_header_file(path: Path, rng: random.Random) -> int:
    """One GGUF whose header is real and whose tensor data is a sparse hole; returns its tensor count."""
    import gguf

    q = gguf.GGMLQuantizationType
    layers = rng.randint(3, 22)
    hidden = rng.choice([1024, 2048, 3072, 4096])
    ffn = hidden * 8 // 3 // 256 * 256
    heads = hidden // 128
    vocab = rng.randint(2000, 6000)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"Bench Llama {path.stem}")
    w.add_block_count(layers)
    w.add_context_length(8192)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(max(1, heads // 4))
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i:05d}" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_scores([0.0] * vocab)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    tensors: list[tuple[str, tuple[int, ...], q]] = [("token_embd.weight", (vocab, hidden), q.Q4_K)]
    for i in range(layers):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (hidden,), q.F32),
            (f"blk.{i}.attn_q.weight", (hidden, hidden), q.Q4_K),
            (f"blk.{i}.attn_k.weight", (hidden // 4, hidden), q.Q4_K),
            (f"blk.{i}.attn_v.weight", (hidden // 4, hidden), q.Q6_K),
            (f"blk.{i}.attn_output.weight", (hidden, hidden), q.Q4_K),
            (f"blk.{i}.ffn_norm.weight", (hidden,), q.F32),
            (f"blk.{i}.ffn_gate.weight", (ffn, hidden), q.Q4_K),
            (f"blk.{i}.ffn_up.weight", (ffn, hidden), q.Q4_K),
            (f"blk.{i}.ffn_down.weight", (hidden, ffn), q.Q6_K),
        ]
    tensors += [("output_norm.weight", (hidden,), q.F32), ("output.weight", (vocab, hidden), q.Q6_K)]
    data_bytes = 0
    for name, shape, qtype in tensors:
        n = _nbytes(shape, qtype)
        w.add_tensor_info(name, shape, np.dtype(np.float32), n, raw_dtype=qtype)
        data_bytes += -(-n // 32) * 32
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header = path.stat().st_size
    os.truncate(path, -(-header // 32) * 32 + data_bytes)
    return len(tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="write the files here and leave them")
    args = parser.parse_args()

    from app.core.importers import read_gguf, scan_path

    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(1234)
        start = time.perf_counter()
        counts = [write_header_file(folder / f"model-{i:04d}.gguf", rng) for i in range(args.files)]
        written = time.perf_counter() - start
        paths = sorted(folder.glob("*.gguf"))
        apparent = sum(p.stat().st_size for p in paths)
        on_disk = sum(p.stat().st_blocks * 512 for p in paths)
        print(f"wrote {len(paths)} GGUF files in {written:.1f} s: {min(counts)}-{max(counts)} tensors, "
              f"{apparent / 2**30:,.0f} GiB on paper, {on_disk / 2**20:,.1f} MiB on disk")

        calls = [0]
        start = time.perf_counter()
        models, errors = scan_path(folder, progress=lambda done, total, path: calls.__setitem__(0, done))
        scan_s = time.perf_counter() - start
        assert not errors and len(models) == len(paths) and calls[0] == len(paths), errors[:3]
        print(f"scan_path over {len(paths)} files, just written: {scan_s:.2f} s "
              f"({scan_s / len(paths) * 1e3:.2f} ms per file; target <= 5 s)")
        start = time.perf_counter()
        scan_path(folder)
        again_s = time.perf_counter() - start
        print(f"scan_path again: {again_s:.2f} s ({again_s / len(paths) * 1e3:.2f} ms per file)")

        per_file = []
        start = time.perf_counter()
        for path in paths:
            t = time.perf_counter()
            read_gguf(path)
            per_file.append(time.perf_counter() - t)
        read_s = time.perf_counter() - start
        print(f"{len(paths)} x read_gguf: {read_s:.2f} s (median {statistics.median(per_file) * 1e3:.2f} ms, "
              f"max {max(per_file) * 1e3:.2f} ms)")

        sample = paths[:20]
        start = time.perf_counter()
        for path in sample:
            read_gguf(path, deep_check=True)
        deep_s = (time.perf_counter() - start) / len(sample)
        print(f"read_gguf(deep_check=True), which adds gguf.GGUFReader: {deep_s * 1e3:.1f} ms per file "
              f"(~{deep_s * len(paths):.0f} s for {len(paths)} files)")


if __name__ == "__main__":
    main()
