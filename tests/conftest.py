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
# The read-ceiling probe streams 2+ GiB (core/roofline.py): tests never quote a roofline.
os.environ.setdefault("INFER_OPT_BANDWIDTH_MIB", "64")


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


ENVIRONMENT_SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = {timeout_s}
[[group]]
variants = ["kv-cache", "{variant}"]
batch_sizes = [{batch_size}]
prompt_tokens = 12
new_tokens = 8
min_repeats = 2
max_repeats = 2
warmup_runs = 1
"""


def run_beside_kv_cache(tmp_path: Path, variant: str, batch_size: int = 2,
                        timeout_s: int = 300) -> tuple[dict[str, dict[str, str]],
                                                       dict[str, dict[str, Any]]]:
    """A tiny suite of `variant` beside torch kv-cache (an engine in its own environment runs
    in its worker there): (rows by variant, samples lines by variant)."""
    import csv
    import json

    from infer_opt.run.runner import run_suite
    from infer_opt.run.suite import load_suite

    body = ENVIRONMENT_SUITE.format(variant=variant, batch_size=batch_size, timeout_s=timeout_s)
    suite = load_suite(str(write_suite(tmp_path / "s.toml", body)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    lines = csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()
    samples = {json.loads(x)["variant"]: json.loads(x) for x in lines}
    return rows, samples
