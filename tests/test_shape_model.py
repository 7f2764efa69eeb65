"""smollm2-135m-shape: SmolLM2-135M's architecture, seeded random weights, nothing downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infer_opt.core import models


def test_shipped_config_is_smollm2_135m() -> None:
    cfg = models.shape_config_dict()
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]) == (30, 576,
                                                                                         1536)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (9, 3, 64)
    assert (cfg["vocab_size"], cfg["max_position_embeddings"]) == (49152, 8192)
    assert cfg["tie_word_embeddings"] is True
    assert cfg["rope_parameters"]["rope_theta"] == 100000.0


def test_shipped_config_matches_the_prepared_default_model() -> None:
    prepared = models.cache_root() / "models" / "smollm2-135m-instruct-v1" / "config.json"
    if not prepared.is_file():
        pytest.skip("the default model is not prepared here")
    real = json.loads(prepared.read_text())
    shape = models.shape_config_dict()
    ignored = {"_model_name_or_path", "transformers_version", "dtype"}
    assert {k: v for k, v in real.items() if k not in ignored} == shape


def test_weights_are_drawn_from_the_seed_alone() -> None:
    """Two builds with one seed are bit-identical; another seed differs; 134.5M parameters."""
    a = models.build_shape_model(0)
    assert sum(p.numel() for p in a.parameters()) == 134_515_008
    digest = models.state_digest(a)
    del a
    assert models.state_digest(models.build_shape_model(0)) == digest
    assert models.state_digest(models.build_shape_model(1)) != digest


def test_resolve_builds_a_local_model_without_download(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("INFER_OPT_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = models.resolve(models.SHAPE_MODEL)
    assert (ref.name, ref.max_context, ref.vocab_size, ref.local) == (models.SHAPE_MODEL, 8192,
                                                                      49152, True)
    assert ref.has_tokenizer == (Path(ref.path) / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
    assert models.state_digest(model) == (Path(ref.path) / "weights_sha256.txt").read_text().strip()
    assert models.resolve(models.SHAPE_MODEL).path == ref.path  # cached: built once
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        logits = model(ids).logits  # [1, 4, 49152]
    assert logits.shape == (1, 4, 49152) and torch.isfinite(logits).all()
