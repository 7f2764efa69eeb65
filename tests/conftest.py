"""Shared fixtures. The fixture plugins are put on PYTHONPATH *before* any cell process starts,
so they register exactly as a pip-installed third-party plugin would."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURE_PLUGINS = Path(__file__).parent / "fixture_plugins"
REPO = Path(__file__).resolve().parents[1]

os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(FIXTURE_PLUGINS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
sys.path.insert(0, str(FIXTURE_PLUGINS))


@pytest.fixture(scope="session", autouse=True)
def _quiet_threads() -> None:
    import torch

    torch.set_num_threads(1)


def write_suite(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def load_engine(variant: str, model: str = "tiny-random", device: str = "cpu") -> Any:
    """The engine of a validated stack, loaded on `model` (the tiny random Llama by default)."""
    from infer_opt.core.models import resolve
    from infer_opt.core.stack import build_stack

    stack = build_stack(variant, device)
    assert stack.unavailable is None, stack.unavailable
    return stack.engine(resolve(model), stack.settings)
