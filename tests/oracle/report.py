"""Print ModelDeck's estimates against llama.cpp's own figures: ``python -m tests.oracle.report``.

Per architecture × preset × context: weights (estimate from the architecture alone vs the quantized
file's tensor bytes and llama_model_size), KV cache (estimate vs the bytes of llama.cpp's cells, and the
MiB it logs), output and compute buffers (estimate vs llama.cpp's CPU figures), with errors. Then the
KV types and sliding-window variants, the compute error over micro-batches and attention modes, and the
compute buffer at published sizes. Needs llama-cpp-python; writes its models into a temporary folder.

Options: --contexts 512 2048 (the per-preset table), --presets Q4_K_M Q8_0 …, --models llama gemma2 …
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from app.core.estimation import estimate_llm
from tests.oracle._llama import PRESETS, SKIPPED_PRESETS, MiB
from tests.oracle._models import MODELS, REAL_MODELS
from tests.oracle._oracle import KV_PRESET, Oracle, cache_bytes, expected_caches, output_bytes

TINY_CASES = [(256, 512), (512, 512), (1000, 512), (2048, 512), (2048, 128), (1000, 256)]
REAL_CASES = [(4096, 512), (8192, 512), (32768, 512), (8192, 2048)]


def _err(est: int, ref: int) -> str:
    if est == ref:
        return "exact"
    return f"{est - ref:+,d} B" if ref == 0 else f"{est / ref - 1:+.1%}"


def _mib(n: int, digits: int = 3) -> str:
    return f"{n / MiB:.{digits}f}"


def weights_and_buffers(oracle: Oracle, models: list[str], presets: list[str], contexts: list[int]) -> None:
    print("\n== Per architecture × preset × context (flash attention, f16 K/V, n_ubatch 512) ==")
    print("weights (bytes): estimate from the architecture vs the quantized file's tensors (= llama_model_size);")
    print("per context (MiB): KV estimate vs the bytes of llama.cpp's cells [its log, 2 decimals]; output:")
    print("llama.cpp's (no separate term in the estimate); compute: estimate vs llama.cpp's compute + output.")
    ctx_head = " | ".join(f"{f'ctx {c}: KV est/llama.cpp [log]':32} {'out':>5} {'compute est/llama.cpp':>21} {'err':>6}"
                          for c in contexts)
    head = f"{'arch':8} {'preset':7} {'weights est':>12} {'llama.cpp':>12} {'err':>5} | {ctx_head}"
    for name in models:
        m = MODELS[name]
        a = m.architecture()
        print("\n" + head)
        for preset in presets:
            w = oracle.weights(name, preset)
            est_w = estimate_llm(preset, architecture=a, qkv_as_v=True).weights_bytes
            same = "" if w.model.size == w.file_bytes else f" (llama_model_size {w.model.size:,})"
            cols = []
            measured = oracle.contexts(name, [{"n_ctx": c, "flash_attention": True} for c in contexts], preset)
            for n_ctx, cm in zip(contexts, measured, strict=True):
                est = estimate_llm(preset, architecture=a, context=n_ctx, qkv_as_v=True)
                exact_kv = cache_bytes(m, [(c.cells, c.layers) for c in cm.kv_caches], "f16", "f16")
                out = cm.output.bytes if cm.output else 0
                comp = cm.compute_best.bytes
                kv = (f"{_mib(est.kv_cache_bytes)}/{_mib(exact_kv)} [{_mib(cm.kv.bytes if cm.kv else 0, 2)}] "
                      f"{_err(est.kv_cache_bytes, exact_kv)}")
                cols.append(f"{kv:32} {_mib(out):>5} {_mib(est.compute_bytes) + '/' + _mib(comp + out):>21} "
                            f"{_err(est.compute_bytes, comp + out):>6}")
            print(f"{name:8} {preset:7} {est_w:>12,} {w.file_bytes:>12,} {_err(est_w, w.file_bytes):>5}{same} | "
                  + " | ".join(cols))


def qkv_rule(oracle: Oracle, presets: list[str]) -> None:
    print("\n== Phi-3's fused attn_qkv: ModelDeck's default (the rule of the published files) vs the llama.cpp "
          "under test (bytes) ==")
    a = MODELS["phi3"].architecture()
    for preset in presets:
        measured = oracle.weights("phi3", preset).file_bytes
        default = estimate_llm(preset, architecture=a).weights_bytes
        current = estimate_llm(preset, architecture=a, qkv_as_v=True).weights_bytes
        print(f"  {preset:7} llama.cpp {measured:>11,}  qkv_as_v=True {current:>11,} {_err(current, measured):>6}  "
              f"default {default:>11,} {_err(default, measured):>7}")


def kv_variants(oracle: Oracle, models: list[str]) -> None:
    print(f"\n== KV cache by K/V type, attention and sliding-window mode ({KV_PRESET}; MiB; "
          "exact = llama.cpp's cells × row sizes) ==")
    modes = [("f16", False, 512, False), ("f16", True, 512, False), ("q8_0", True, 512, False),
             ("q4_0", True, 512, False), ("f16", True, 256, False), ("f16", True, 512, True)]
    print(f"{'arch':8} {'ctx':>5} " + " ".join(
        f"{(kv + ('/fa' if fa else '/nofa') + (f'/ub{ub}' if ub != 512 else '') + ('/swa_full' if full else '')):>22}"
        for kv, fa, ub, full in modes))
    for name in models:
        m = MODELS[name]
        for n_ctx in (256, 512, 1000, 2048):
            cells = []
            for kv, fa, ub, full in modes:
                cm = oracle.context(name, n_ctx, n_ubatch=ub, flash_attention=fa, type_k=kv, type_v=kv, swa_full=full)
                exact = cache_bytes(m, [(c.cells, c.layers) for c in cm.kv_caches], kv, kv)
                rules = cache_bytes(m, expected_caches(m, n_ctx, ub, swa_full=full), kv, kv)
                est = estimate_llm(KV_PRESET, architecture=m.architecture(), context=n_ctx, kv_dtype=kv, batch=ub,
                                   flash_attention=fa, swa_full=full).kv_cache_bytes
                flag = "" if est == exact == rules else " !"
                cells.append(f"{_mib(est, 4)}/{_mib(exact, 4)} {_err(est, exact):>5}{flag}")
            print(f"{name:8} {n_ctx:>5} " + " ".join(f"{c:>22}" for c in cells))


def compute_summary(oracle: Oracle, models: list[str]) -> None:
    print("\n== Compute buffer: estimate vs llama.cpp compute + output over (context, n_ubatch) "
          + ", ".join(f"({c},{u})" for c, u in TINY_CASES) + f" ({KV_PRESET}) ==")
    print(f"{'arch':8} {'attention':9} {'errors':60} {'min':>7} {'max':>7}")
    for name in models:
        a = MODELS[name].architecture()
        for fa in (True, False):
            cms = oracle.contexts(name, [{"n_ctx": c, "n_ubatch": u, "flash_attention": fa} for c, u in TINY_CASES])
            errs = []
            for (n_ctx, ub), cm in zip(TINY_CASES, cms, strict=True):
                est = estimate_llm(KV_PRESET, architecture=a, context=n_ctx, batch=ub, flash_attention=fa)
                errs.append(est.compute_bytes / (cm.compute_best.bytes + (cm.output.bytes if cm.output else 0)) - 1)
            print(f"{name:8} {'flash' if fa else 'no flash':9} {' '.join(f'{e:+.0%}' for e in errs):60} "
                  f"{min(errs):+7.1%} {max(errs):+7.1%}")


def real_compute(oracle: Oracle) -> None:
    print("\n== Compute buffer at published sizes (header-only files loaded with no_alloc; MiB) ==")
    print(f"{'model':13} {'attention':9} {'ctx':>6} {'ubatch':>6} {'estimate':>9} {'compute':>9} {'output':>7} "
          f"{'err':>7} {'old est':>9} {'old err':>7}")
    for name, m in REAL_MODELS.items():
        a = m.architecture()
        for fa in (True, False):
            settings = [{"n_ctx": c, "n_ubatch": u, "flash_attention": fa} for c, u in REAL_CASES]
            for (n_ctx, ub), cm in zip(REAL_CASES, oracle.real_contexts(name, settings), strict=True):
                est = estimate_llm(KV_PRESET, architecture=a, context=n_ctx, batch=ub,
                                   flash_attention=fa).compute_bytes
                out = cm.output.bytes if cm.output else 0
                ref = cm.compute_best.bytes + out
                assert out == 0 or cm.output is None or cm.output.covers(output_bytes(m))
                old = _old_compute(a, n_ctx, ub, fa)
                print(f"{name:13} {'flash' if fa else 'no flash':9} {n_ctx:>6} {ub:>6} {_mib(est, 2):>9} "
                      f"{_mib(cm.compute_best.bytes, 2):>9} {_mib(out, 2):>7} {est / ref - 1:+7.1%} "
                      f"{_mib(old, 2):>9} {old / ref - 1:+7.1%}")


def _old_compute(a, context: int, batch: int, flash: bool) -> int:
    """llm_compute_bytes before the oracle (logits, or scores without flash attention; batch not capped)."""
    e, v = a.hidden_size, a.vocab_size or 32000
    logits = 4 * batch * (e + v)
    if flash:
        return max(logits, 4 * batch * (1 + 4 * e))
    return max(4 * batch * (1 + 4 * e + context * (1 + a.heads)), logits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:
        print(f"llama-cpp-python is not available ({exc}): nothing to compare against", file=sys.stderr)
        return 2
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modeldeck-oracle-") as tmp:
        oracle = Oracle(Path(tmp))
        print(f"ModelDeck estimates vs llama.cpp (llama-cpp-python {llama_cpp.__version__}, CPU backend), "
              "tiny random-weight models")
        for name in args.models:
            m = MODELS[name]
            print(f"  {name:8} {m.arch:7} layers {m.layers} hidden {m.hidden} heads {m.heads}/{m.kv_heads} "
                  f"head_dim {m.head_dim} ffn {m.ff} vocab {m.vocab}"
                  + (f" experts {m.experts}/{m.experts_used}" if m.experts else "")
                  + (f" window {m.sliding_window}" if m.sliding_window else "") + (" tied" if m.tied else ""))
        print(f"Presets: {' '.join(args.presets)}")
        print("Skipped (need an importance matrix): " + " ".join(SKIPPED_PRESETS))
        weights_and_buffers(oracle, args.models, args.presets, args.contexts)
        if "phi3" in args.models:
            qkv_rule(oracle, args.presets)
        kv_variants(oracle, args.models)
        compute_summary(oracle, args.models)
        real_compute(oracle)
    print(f"\n({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
