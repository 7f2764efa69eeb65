"""Converted models the peer engines build once and cache (GGUF, OpenVINO IR, CTranslate2).

A build is keyed by everything that changes its output (the model's content, the conversion
settings, the library versions, a recipe version), made in a scratch folder and published with
an atomic rename under a file lock (core/models.locked, publish): two cells that need the same
build wait for one another, and nobody ever reads a half-written model. Heavy conversions run in
a child process (`run_child`), so the converter's memory never counts in the measuring
process's peak RSS, with the suite's thread count.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infer_opt.core.models import cache_root, locked, publish


def version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "none"


def model_digest(model_path: str) -> str:
    """The content of a local model directory (config and weights), else the name as given."""
    from infer_opt.run.fidelity import weights_digest

    p = Path(model_path)
    return weights_digest(p) if p.is_dir() else model_path


def build_dir(kind: str, model_path: str, key: dict[str, Any], label: str) -> Path:
    """Cache folder of one build: <cache>/<kind>/<model>-<label>-<hash of model and key>."""
    full = {"model": model_digest(model_path), **key}
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / kind / f"{Path(model_path).name}-{label}-{digest}"


def cached_build(target: Path, done_file: str, build: Callable[[Path], None]) -> float:
    """Make `target` once: `build(scratch)` writes into a fresh folder that is then renamed to
    `target`. `done_file` inside `target` marks a finished build. Returns the seconds spent
    building (0.0 when it was cached)."""
    if (target / done_file).is_file():
        return 0.0
    with locked(target):
        if (target / done_file).is_file():  # another process built it while we waited
            return 0.0
        t0 = time.perf_counter()
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
        try:
            build(scratch)
            if not (scratch / done_file).is_file():
                raise RuntimeError(f"the build wrote no {done_file}")
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        publish(scratch, target)
        return time.perf_counter() - t0


def run_child(module: str, args: list[str], what: str) -> None:
    """`python -m module args` in this interpreter, with the suite's thread count; on failure a
    RuntimeError carrying the child's last output line."""
    import torch

    threads = str(torch.get_num_threads())
    env = dict(os.environ, INFER_OPT_BUILD_THREADS=threads, OMP_NUM_THREADS=threads,
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
        raise RuntimeError(f"{what} failed: {lines[-1] if lines else proc.returncode}")


def child_threads() -> int:
    """In a build child: the thread count its parent passed."""
    return int(os.environ.get("INFER_OPT_BUILD_THREADS", "2"))
