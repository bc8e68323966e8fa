"""The size of a quant before it exists: llama.cpp's per-tensor type choice applied to the model's shape.

A quant type names a mix, not one format: llama.cpp's quantizer (``llama_tensor_get_type`` in
src/llama-quant.cpp) raises the output tensor and some ``attn_v``/``ffn_down`` layers, and a row
whose width is not a multiple of the format's block falls back to another format. On SmolLM2 (576
wide) that makes Q4_K_M 6.2 bits per weight instead of 4.9. This module rebuilds the tensor list
of a Llama-layout decoder from its :class:`~publisher.manifest.Architecture`, repeats the rules of
that llama.cpp version for dense models, and adds up the bytes. MoE models get the dense rules
(llama.cpp's 8-expert special cases are left out), so their estimates are rougher.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from publisher.manifest import Architecture

# The format a mix starts from (llama_ftype_get_default_type); names not listed use their own name.
DEFAULT_TYPE = {
    "Q2_K_S": "Q2_K",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "IQ2_M": "IQ2_S",
    "IQ3_XS": "IQ3_S",
    "IQ3_M": "IQ3_S",
    "IQ1_M": "IQ1_M",
}
# tensor_type_fallback: a row that does not split into the format's blocks.
FALLBACK = {
    **dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
    **dict.fromkeys(("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"),
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}
_LOW_IQ = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
FLOATS = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class Tensor:
    """One tensor as the GGUF holds it: name, role, row width (ne0), rows, and its layer (-1 outside blocks)."""

    name: str
    role: str
    width: int
    rows: int
    layer: int = -1

    @property
    def elements(self) -> int:
        return self.width * self.rows


def tensors(arch: Architecture) -> list[Tensor]:
    """The tensors of a Llama-layout decoder of this shape (norms included, 1-D tensors as one row)."""
    h, vocab = arch.hidden, arch.vocab or 0
    q, kv = arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
    ffn, experts = arch.intermediate or 4 * h, arch.experts or 1
    out = [Tensor("token_embd.weight", "token_embd", h, vocab), Tensor("output_norm.weight", "norm", h, 1)]
    if not arch.tied_embeddings:
        out.append(Tensor("output.weight", "output", h, vocab))
    for i in range(arch.n_layers):
        block = [
            ("attn_norm", "norm", h, 1),
            ("ffn_norm", "norm", h, 1),
            ("attn_q", "attn_q", h, q),
            ("attn_k", "attn_k", h, kv),
            ("attn_v", "attn_v", h, kv),
            ("attn_output", "attn_output", q, h),
            ("ffn_gate", "ffn_gate", h, ffn * experts),
            ("ffn_up", "ffn_up", h, ffn * experts),
            ("ffn_down", "ffn_down", ffn, h * experts),
        ]
        if arch.attention_bias:
            block += [("attn_q_bias", "norm", q, 1), ("attn_k_bias", "norm", kv, 1), ("attn_v_bias", "norm", kv, 1)]
        out += [Tensor(f"blk.{i}.{name}.weight", role, width, rows, i) for name, role, width, rows in block]
    return out


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _mix_type(mix: str, base: str, t: Tensor, arch: Architecture, imatrix: bool) -> str:  # noqa: C901
    """llama_tensor_get_type_impl for a dense Llama: the format ``mix`` gives tensor ``t``."""
    gqa4 = arch.n_heads // max(arch.n_kv_heads, 1) >= 4
    n, i = arch.n_layers, t.layer
    if t.role == "output" or (t.role == "token_embd" and arch.tied_embeddings):
        if t.width % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[base]][0]:
            return "Q8_0"
        if mix in _LOW_IQ or mix == "IQ3_XXS":
            return "Q5_K"
        return base if base == "Q8_0" else "Q6_K"
    if t.role == "token_embd":
        low = {"IQ2_XXS": "Q2_K", "IQ2_XS": "Q2_K", "IQ1_S": "Q2_K", "IQ1_M": "Q2_K", "IQ2_S": "IQ3_S"}
        return low.get(mix, {"IQ2_M": "IQ3_S", "IQ3_XXS": "IQ3_S"}.get(mix, base))
    if mix in _LOW_IQ:
        if t.role == "attn_v":
            return "Q4_K" if gqa4 else ("IQ3_S" if mix in ("IQ2_S", "IQ2_M") else "Q2_K")
        if t.role == "ffn_down" and i < n // 8:
            return "IQ3_S" if mix in ("IQ2_S", "IQ2_M") else "Q2_K"
        if t.role == "attn_output":
            return {"IQ1_S": "IQ2_XXS", "IQ1_M": "IQ2_XXS", "IQ2_S": "IQ3_S", "IQ2_M": "IQ3_S"}.get(mix, base)
        return base
    if t.role == "attn_v":
        by_mix = {
            "Q2_K": "Q4_K" if gqa4 else "Q3_K",
            "Q2_K_S": "Q4_K" if gqa4 else base,
            "IQ3_XXS": "Q4_K" if gqa4 else ("IQ3_XXS" if imatrix else "IQ3_S"),
            "IQ3_XS": "Q4_K" if gqa4 else base,
            "IQ3_S": "Q4_K" if gqa4 else base,
            "IQ3_M": "Q4_K",
            "Q3_K_M": "Q5_K" if i < 2 else "Q4_K",
            "Q3_K_L": "Q5_K",
            "IQ4_NL": "Q5_K" if gqa4 else base,
            "IQ4_XS": "Q5_K" if gqa4 else base,
            "Q4_K_M": "Q6_K" if _more_bits(i, n) else base,
            "Q5_K_M": "Q6_K" if _more_bits(i, n) else base,
            "Q4_K_S": "Q5_K" if i < 4 else base,
        }
        return by_mix.get(mix, base)
    if t.role in ("attn_k", "attn_q"):
        return {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}.get(mix, base)
    if t.role == "ffn_down":
        first = i < n // 8
        by_mix = {
            "Q2_K": "Q3_K",
            "Q2_K_S": "Q4_K" if first else base,
            "IQ3_XXS": base if imatrix else ("Q4_K" if first else "Q3_K"),
            "Q3_K_M": "Q5_K" if i < n // 16 else "Q4_K",
            "IQ3_M": "Q4_K" if first else base,
            "Q3_K_L": "Q5_K",
            "Q4_K_M": "Q6_K" if _more_bits(i, n) else base,
            "IQ4_NL": "Q5_K" if first and not imatrix else base,
            "IQ4_XS": "Q5_K" if first and not imatrix else base,
            "Q5_K_M": "Q6_K" if _more_bits(i, n) else base,
            "Q4_K_S": "Q5_K" if first else base,
            "Q4_0": "Q4_1" if imatrix and first else base,
            "Q5_0": "Q5_1" if imatrix and first else base,
        }
        return by_mix.get(mix, base)
    if t.role == "attn_output":
        return {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(mix, base)
    if t.role in ("ffn_gate", "ffn_up") and mix == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
        return "IQ3_XXS"
    return base


def _fallback(fmt: str, width: int) -> str:
    if width % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[fmt]][0] == 0:
        return fmt
    fmt = FALLBACK.get(fmt, fmt)
    return fmt if width % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[fmt]][0] == 0 else "F16"


def tensor_format(
    mix: str, t: Tensor, arch: Architecture, *, imatrix: bool = False, overrides: dict[str, str] | None = None
) -> str:
    """The format llama.cpp gives tensor ``t`` in quant ``mix`` (a catalogue name; F16/BF16/F32 as is).

    ``overrides`` maps ``token_embd``/``output`` to a format, as a variant's ``token_embd``/``output`` do.
    """
    if t.role == "norm":
        return "F32"
    if mix in FLOATS:
        return mix
    chosen = (overrides or {}).get(t.role)
    if chosen is None:
        base = DEFAULT_TYPE.get(mix, mix)
        chosen = _mix_type(mix, base, t, arch, imatrix)
    return _fallback(chosen, t.width)


def tensor_bytes(fmt: str, t: Tensor) -> int:
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[fmt]]
    return t.elements // block * size


def weights_bytes(
    mix: str, arch: Architecture, *, imatrix: bool = False, overrides: dict[str, str] | None = None
) -> int:
    """The bytes of every tensor of a ``mix`` quant of this shape (the GGUF's metadata not included)."""
    return sum(
        tensor_bytes(tensor_format(mix, t, arch, imatrix=imatrix, overrides=overrides), t) for t in tensors(arch)
    )


def largest_tensor(arch: Architecture) -> Tensor:
    """The tensor with the most elements: what the converter and the quantizer hold whole, in f32."""
    return max(tensors(arch), key=lambda t: t.elements)


def imatrix_bytes(arch: Architecture) -> int:
    """The size of llama-imatrix's GGUF: per matmul weight of the blocks, f32 sums per input column and expert."""
    experts = arch.experts or 1
    matmuls = [t for t in tensors(arch) if t.layer >= 0 and t.role != "norm"]
    sums = sum(t.width * experts * 4 + experts * 4 for t in matmuls)
    # a tensor-info entry per stored tensor (name, shape, type, offset) and 32-byte alignment
    return sums + len(matmuls) * 2 * (64 + 32)
