"""Micro-benchmarks: the attention op (eager math vs SDPA) and matmul (fp32 / bf16 / int8)."""

from __future__ import annotations

import math

import pytest
import torch

HEADS, HEAD_DIM = 9, 64  # SmolLM2-135M's attention shape


def _qkv(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, HEADS, n, HEAD_DIM, generator=g) for _ in range(3))  # [1, H, n, d]


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    n = q.shape[-2]
    mask = torch.full((n, n), float("-inf")).triu(1)  # causal, [n, n]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask  # [1, H, n, n]
    return torch.softmax(scores, dim=-1) @ v


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.parametrize("n", [128, 512, 2048])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention(benchmark, impl: str, n: int) -> None:
    benchmark.group = f"attention n={n}"
    benchmark.extra_info.update(op="attention", impl=impl, n=n, heads=HEADS, head_dim=HEAD_DIM)
    fn = eager_attention if impl == "eager" else sdpa_attention
    q, k, v = _qkv(n)
    with torch.inference_mode():
        out = benchmark(fn, q, k, v)
    assert out.shape == (1, HEADS, n, HEAD_DIM)


def _int8_matmul_reason() -> str | None:
    try:
        a = torch.ones(32, 32, dtype=torch.int8)
        torch._int_mm(a, a)
    except (RuntimeError, AttributeError) as exc:
        return f"torch._int_mm unavailable here: {exc}"
    return None


@pytest.mark.parametrize("size", [256, 1024, 2048])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_matmul(benchmark, dtype: str, size: int) -> None:
    benchmark.group = f"matmul {size}x{size}"
    benchmark.extra_info.update(op="matmul", dtype=dtype, size=size,
                                flops=2 * size**3)
    g = torch.Generator().manual_seed(0)
    if dtype == "int8":
        reason = _int8_matmul_reason()
        if reason:
            pytest.skip(reason)
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=g)
        b = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=g)
        out = benchmark(torch._int_mm, a, b)  # int8 x int8 -> int32 accumulate
    else:
        a = torch.randn(size, size, generator=g).to(getattr(torch, dtype))
        b = torch.randn(size, size, generator=g).to(getattr(torch, dtype))
        out = benchmark(torch.matmul, a, b)
    assert out.shape == (size, size)
