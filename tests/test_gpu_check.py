"""bench/checks/gpu_check.py: the prepared GPU check's mechanics, run on CPU with the tiny model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "bench" / "checks" / "gpu_check.py"


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_suite_caps_every_workload() -> None:
    from infer_opt.run.suite import load_suite

    gc = _module()
    suite = gc.cpu_suite(load_suite("gpu-quick"))
    assert (suite.device, suite.model, suite.threads) == ("cpu", "tiny-random", 1)
    for g in suite.groups:
        for w in g.workloads:
            assert w.prompt_tokens <= 32 and w.new_tokens <= 8
            assert w.min_repeats == w.max_repeats == 2
            w.validate(512)  # fits the tiny model's context
    batch = next(g for g in suite.groups if g.name == "batch")
    assert [w.batch_size for w in batch.workloads] == [1, 4, 16, 64]


def test_install_is_offline_without_deps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    gc = _module()
    calls: list[list[str]] = []
    monkeypatch.setattr(gc.subprocess, "run", lambda cmd, check: calls.append(cmd))
    (tmp_path / "torchao-0.0.1-py3-none-any.whl").write_bytes(b"x" * 2**20)
    gc.install(tmp_path)
    assert calls[0][1:] == ["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-e", str(REPO)]
    assert calls[1][-1].endswith("torchao-0.0.1-py3-none-any.whl") and "--no-deps" in calls[1]
    assert "carried wheel torchao-0.0.1-py3-none-any.whl (1.0 MiB)" in capsys.readouterr().out


def test_check_runs_on_cpu_and_writes_its_folder(tmp_path: Path) -> None:
    from infer_opt.format.io import read_results

    out = tmp_path / "out"
    variants = "baseline,kv-cache+sdpa+bf16,kv-cache+sdpa-flash+bf16,sdpa+bf16+cuda-graphs"
    p = subprocess.run([sys.executable, str(SCRIPT), str(out), "--cpu", "--variants", variants],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    names = {f.name for f in out.iterdir()}
    assert "versions.txt" in names
    csv_path = next(out.glob("*.csv"))
    stem = csv_path.name.removesuffix(".csv")
    assert {f"{stem}.samples.jsonl", f"{stem}.md", f"{stem}.report.md"} <= names
    assert not any(n.endswith(".png") for n in names)  # packed, so few files come back
    if f"{stem}.plots.tar" in names:
        with tarfile.open(out / f"{stem}.plots.tar") as tar:
            assert all(m.name.endswith(".png") for m in tar.getmembers())
    run = read_results(csv_path)  # parses with the project's own reader
    status = {(r["group"], r["variant"], r["batch_size"], r["policy"]): r["status"]
              for r in run.rows}
    assert status[("precision", "baseline", "1", "")] == "ok"
    assert status[("attention-kernels", "kv-cache+sdpa-flash+bf16", "8", "")] == "skipped"
    assert status[("compiled", "sdpa+bf16+cuda-graphs", "1", "")] == "skipped"
    assert status[("serving", "kv-cache+sdpa+bf16", "", "continuous")] == "ok"
    for r in run.rows:
        assert r["model"] == "tiny-random" and r["device"] == "cpu"
        if r["status"] == "skipped":
            assert r["reason"].endswith("needs CUDA (device is cpu)")
    versions = (out / "versions.txt").read_text()
    assert versions.startswith("python ") and "\ntorch " in versions
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == f"{len(run.rows)} rows: " + ", ".join(
        f"{sum(r['status'] == s for r in run.rows)} {s}" for s in ("ok", "skipped", "failed"))
    assert any("J/out tok" in line for line in lines[-len(run.rows) - 4:])


def test_bad_output_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = subprocess.run([sys.executable, str(SCRIPT), str(blocker / "out"), "--cpu"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("gpu_check: error: --out")


def test_sigterm_still_writes_the_table_of_rows_so_far(tmp_path: Path) -> None:
    """The .sh's time limit sends SIGTERM: the rows so far keep their report and short table."""
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--cpu", "--variants",
                             "kv-cache,kv-cache+sdpa+bf16"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 600
    # Wait for the first row (the precision group) to be written, then stop the run.
    while time.monotonic() < deadline and proc.poll() is None:
        csvs = list(out.glob("*.csv")) if out.is_dir() else []
        if csvs and len(csvs[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.5)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be stopped")
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, stdout[-3000:]
    assert "stopped by SIGTERM (time limit)" in stdout
    assert stdout.strip().splitlines()[-1].endswith("(stopped early)")
    stem = next(out.glob("*.csv")).name.removesuffix(".csv")
    assert (out / f"{stem}.md").is_file() and (out / f"{stem}.report.md").is_file()
