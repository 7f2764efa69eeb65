"""The fidelity reference is keyed by the weights' content, not by the model's path."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from infer_opt.core import artifacts
from infer_opt.core.models import ModelRef
from infer_opt.run import fidelity


def write_model(d: Path, value: float) -> ModelRef:
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"vocab_size": 512, "hidden_size": 64}))
    save_file({"w": torch.full((4, 4), value)}, str(d / "model.safetensors"))
    return ModelRef("local", str(d), False, 512, 512, True)


def key(ref: ModelRef) -> Path:
    ids = torch.zeros(1, 4, dtype=torch.long)
    return fidelity._cache_path(ref, "cpu", ids, ids)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFER_OPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(artifacts, "_DIGESTS", {})


def test_a_directory_overwritten_in_place_gets_a_new_key(tmp_path: Path) -> None:
    model = tmp_path / "model"
    first = key(write_model(model, 1.0))
    assert first == key(write_model(model, 1.0))  # same content, same key
    second = key(write_model(model, 2.0))  # same path, same sizes, other weights
    assert second != first
    (model / "config.json").write_text(json.dumps({"vocab_size": 512, "hidden_size": 32}))
    assert key(ModelRef("local", str(model), False, 512, 512, True)) not in (first, second)
    assert first.name.startswith("model-") and first.suffix == ".safetensors"


def test_the_same_weights_elsewhere_share_the_key(tmp_path: Path) -> None:
    a, b = key(write_model(tmp_path / "a", 1.0)), key(write_model(tmp_path / "b", 1.0))
    assert a.name.removeprefix("a-") == b.name.removeprefix("b-")


def test_digest_is_cached_by_path_size_mtime_unless_fresh(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ref = write_model(tmp_path / "m", 1.0)
    weights = Path(ref.path) / "model.safetensors"
    opened: list[str] = []
    real_open = open

    def counting_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith(".safetensors") and "rb" in args:
            opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    key(ref)
    key(ref)
    assert len(opened) == 2  # just written: hashed every time, never trusted from the cache
    old = time.time() - 60
    os.utime(weights, (old, old))
    opened.clear()
    key(ref)
    artifacts._DIGESTS.clear()  # a new process: only the disk cache is left
    key(ref)
    assert len(opened) == 1  # hashed once, then read from the digest cache
