"""Tiny random-weight models, one per architecture ModelDeck's estimator models.

Each ``TinyModel`` carries the numbers written into the GGUF file and builds ModelDeck's
``Architecture`` from those same numbers (never from the file header), so the oracle compares the
estimator's rules with llama.cpp's, not an importer with itself.

The shapes are chosen to hit the quantizer rules that matter:
- 8 layers, so ``use_more_bits`` (layers i < n/8, i >= 7n/8, every third between) picks 4 of 8;
- rows whose length is not a multiple of 256 (hidden 320, FFN 608, attention output 384, expert FFN 128),
  which k-quants cannot store and llama.cpp falls back for;
- tied embeddings (Qwen2, Gemma 2: no output.weight, so token_embd takes the output tensor's type);
- GQA ratios below and above 4 (Q2_K's attn_v rule), 8 experts (Mixtral's rules) and 4 experts;
- Gemma 2's sliding window on every other layer and its four norms per layer, Gemma 3's one global
  layer in six and per-head Q/K norms (Qwen3 has those too); Qwen2's q/k/v biases;
  Phi-3's fused attn_qkv and fused gate/up (ffn_up with 2 × FFN rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.estimation import Architecture

VOCAB = 1000


@dataclass(frozen=True)
class TinyModel:
    name: str
    #: llama.cpp's architecture name (general.architecture).
    arch: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ff: int
    vocab: int = VOCAB
    tied: bool = False
    bias: bool = False
    fused_qkv: bool = False
    experts: int = 0
    experts_used: int = 0
    sliding_window: int | None = None
    #: Every Nth layer is global (llama.cpp's swa pattern); Gemma 2: 2.
    swa_pattern: int | None = None
    #: Extra per-layer norms (Gemma 2/3's post-attention and post-FFN norms).
    post_norms: bool = False
    #: Per-head RMS norms on Q and K (Gemma 3, Qwen3): attn_q_norm and attn_k_norm, head_dim wide.
    qk_norm: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def architecture(self) -> Architecture:
        """ModelDeck's view of this model, from the numbers written, as an importer of a
        Hugging Face config would give it."""
        return Architecture(
            layers=self.layers,
            hidden_size=self.hidden,
            heads=self.heads,
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            vocab_size=self.vocab,
            intermediate_size=None if self.experts else self.ff,
            expert_intermediate_size=self.ff if self.experts else None,
            experts=self.experts or None,
            active_experts=self.experts_used or None,
            family=self.arch,
            sliding_window=self.sliding_window,
            sliding_window_pattern=self.swa_pattern,
            tie_word_embeddings=self.tied,
            attention_bias=self.bias,
        )

    def tensors(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        """(name, numpy shape) of every tensor; numpy's last axis is ggml's ne[0]."""
        h, L = self.hidden, self.layers
        q_dim, kv_dim = self.heads * self.head_dim, self.kv_heads * self.head_dim
        yield "token_embd.weight", (self.vocab, h)
        yield "output_norm.weight", (h,)
        if not self.tied:
            yield "output.weight", (self.vocab, h)
        for i in range(L):
            p = f"blk.{i}."
            yield p + "attn_norm.weight", (h,)
            if self.fused_qkv:
                yield p + "attn_qkv.weight", (q_dim + 2 * kv_dim, h)
            else:
                yield p + "attn_q.weight", (q_dim, h)
                yield p + "attn_k.weight", (kv_dim, h)
                yield p + "attn_v.weight", (kv_dim, h)
            if self.bias:
                yield p + "attn_q.bias", (q_dim,)
                yield p + "attn_k.bias", (kv_dim,)
                yield p + "attn_v.bias", (kv_dim,)
            if self.qk_norm:
                yield p + "attn_q_norm.weight", (self.head_dim,)
                yield p + "attn_k_norm.weight", (self.head_dim,)
            yield p + "attn_output.weight", (h, q_dim)
            if self.post_norms:
                yield p + "post_attention_norm.weight", (h,)
            yield p + "ffn_norm.weight", (h,)
            if self.experts:
                e = self.experts
                yield p + "ffn_gate_inp.weight", (e, h)
                yield p + "ffn_gate_exps.weight", (e, self.ff, h)
                yield p + "ffn_up_exps.weight", (e, self.ff, h)
                yield p + "ffn_down_exps.weight", (e, h, self.ff)
            elif self.fused_qkv:  # Phi-3 also fuses gate and up: ffn_up holds both
                yield p + "ffn_up.weight", (2 * self.ff, h)
                yield p + "ffn_down.weight", (h, self.ff)
            else:
                yield p + "ffn_gate.weight", (self.ff, h)
                yield p + "ffn_up.weight", (self.ff, h)
                yield p + "ffn_down.weight", (h, self.ff)
            if self.post_norms:
                yield p + "post_ffw_norm.weight", (h,)

    def _write_metadata(self, w: Any) -> None:
        """The keys convert_hf_to_gguf writes for this architecture (with a dummy SentencePiece vocabulary)."""
        import gguf

        w.add_name(self.name)
        w.add_context_length(4096)
        w.add_embedding_length(self.hidden)
        w.add_block_count(self.layers)
        w.add_feed_forward_length(self.ff)
        w.add_head_count(self.heads)
        w.add_head_count_kv(self.kv_heads)
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(self.head_dim)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        if self.experts:
            w.add_expert_count(self.experts)
            w.add_expert_used_count(self.experts_used)
        if self.sliding_window:
            w.add_sliding_window(self.sliding_window)
        if self.arch in ("gemma2", "gemma3"):
            w.add_attn_logit_softcapping(50.0)
            w.add_final_logit_softcapping(30.0)
        w.add_tokenizer_model("llama")
        # <unk>, <s>, </s> and <|endoftext|> first: llama.cpp looks these up by name for Phi-3.
        special = ["<unk>", "<s>", "</s>", "<|endoftext|>"]
        w.add_token_list([(special[i] if i < len(special) else f"t{i}").encode() for i in range(self.vocab)])
        w.add_token_scores([0.0] * self.vocab)
        w.add_token_types([1] * self.vocab)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)

    def write(self, path: Path, seed: int = 0) -> Path:
        """Write the model as GGUF: matrices in F16, 1-D tensors and the MoE router in F32, as
        convert_hf_to_gguf does with --outtype f16."""
        import gguf

        w = gguf.GGUFWriter(str(path), self.arch)
        self._write_metadata(w)
        rng = np.random.default_rng(seed)
        for name, shape in self.tensors():
            if len(shape) == 1:
                data = (1.0 + 0.01 * rng.standard_normal(shape)).astype(np.float32)
            elif name.endswith("ffn_gate_inp.weight"):  # convert_hf_to_gguf keeps the router in F32
                data = 0.02 * rng.standard_normal(shape, dtype=np.float32)
            else:
                data = (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)
            w.add_tensor(name, data)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    def write_shapes_only(self, path: Path) -> Path:
        """Write the header of a full-size model and leave the tensor data a hole (a sparse file): llama.cpp
        loads it with ``no_alloc`` and reports the compute and output buffers a real load would allocate,
        without reading or allocating a byte of weights. For checking compute buffers at real sizes."""
        import gguf

        w = gguf.GGUFWriter(str(path), self.arch)
        self._write_metadata(w)
        total = 0
        for name, shape in self.tensors():
            dtype = np.dtype(np.float32 if len(shape) == 1 or name.endswith("ffn_gate_inp.weight") else np.float16)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            w.add_tensor_info(name, shape, dtype, nbytes)
            total += -(-nbytes // 32) * 32
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        header = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(-(-header // 32) * 32 + total)
        return path


MODELS: dict[str, TinyModel] = {
    m.name: m
    for m in (
        # Llama 3 style GQA (4 query heads per KV head): hidden 256 takes k-quants, FFN 608 does not.
        TinyModel("llama", "llama", layers=8, hidden=256, heads=4, kv_heads=1, head_dim=64, ff=608),
        # Qwen2: q/k/v biases, tied embeddings, hidden 320 (every hidden-wide row falls back), GQA 5.
        TinyModel("qwen2", "qwen2", layers=8, hidden=320, heads=5, kv_heads=1, head_dim=64, ff=768,
                  tied=True, bias=True),
        # Gemma 2: sliding window on every other layer, head_dim 96 (attention output rows of 384),
        # tied embeddings, post-attention and post-FFN norms, GQA 2.
        TinyModel("gemma2", "gemma2", layers=8, hidden=256, heads=4, kv_heads=2, head_dim=96, ff=512,
                  tied=True, sliding_window=128, swa_pattern=2, post_norms=True),
        # Gemma 3: one global layer in six (layer 5 of 8), per-head Q/K norms, head_dim 160 (q rows of 640).
        TinyModel("gemma3", "gemma3", layers=8, hidden=256, heads=4, kv_heads=1, head_dim=160, ff=512,
                  tied=True, sliding_window=64, swa_pattern=6, post_norms=True, qk_norm=True),
        # Qwen3: per-head Q/K norms instead of biases, untied, GQA 2.
        TinyModel("qwen3", "qwen3", layers=8, hidden=256, heads=4, kv_heads=2, head_dim=64, ff=544, qk_norm=True),
        # Phi-3: fused attn_qkv and gate/up, no GQA, and a sliding window in its config (Phi-3-mini-4k
        # names 2047; convert_hf_to_gguf writes it) that llama.cpp does not use: it caches the whole context.
        TinyModel("phi3", "phi3", layers=8, hidden=256, heads=4, kv_heads=4, head_dim=64, ff=512,
                  fused_qkv=True, sliding_window=128),
        # Mixtral style MoE in llama.cpp's llama architecture: 8 experts (llama.cpp's 8-expert rules),
        # expert FFN 128 (ffn_down_exps rows fall back).
        TinyModel("mixtral", "llama", layers=8, hidden=256, heads=4, kv_heads=1, head_dim=64, ff=128,
                  experts=8, experts_used=2),
        # A 4-expert MoE: the ordinary rules for attention, expert tensors as 3-D.
        TinyModel("moe4", "llama", layers=8, hidden=256, heads=4, kv_heads=2, head_dim=64, ff=256,
                  experts=4, experts_used=2),
    )
}

#: Published shapes, written header-only (``write_shapes_only``) to check compute buffers at real sizes.
REAL_MODELS: dict[str, TinyModel] = {
    m.name: m
    for m in (
        TinyModel("Llama-3.1-8B", "llama", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, ff=14336,
                  vocab=128256),
        TinyModel("Qwen2.5-7B", "qwen2", layers=28, hidden=3584, heads=28, kv_heads=4, head_dim=128, ff=18944,
                  vocab=152064, bias=True),
        TinyModel("Gemma-2-9B", "gemma2", layers=42, hidden=3584, heads=16, kv_heads=8, head_dim=256, ff=14336,
                  vocab=256000, tied=True, sliding_window=4096, swa_pattern=2, post_norms=True),
        TinyModel("Phi-3-mini", "phi3", layers=32, hidden=3072, heads=32, kv_heads=32, head_dim=96, ff=8192,
                  vocab=32064, fused_qkv=True, sliding_window=2047),
        TinyModel("Mixtral-8x7B", "llama", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, ff=14336,
                  vocab=32000, experts=8, experts_used=2),
        TinyModel("Qwen3-8B", "qwen3", layers=36, hidden=4096, heads=32, kv_heads=8, head_dim=128, ff=12288,
                  vocab=151936, qk_norm=True),
    )
}
