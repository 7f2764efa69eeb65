"""Bad input: one clear line naming the field, exit code 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import write_suite

GOOD = """
model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
variants = ["kv-cache"]
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 4
repeats = 1
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infer_opt.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("infer-opt: error: ")]
    assert len(errors) == 1, proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]


@pytest.mark.parametrize("body,needles", [
    (GOOD.replace('"kv-cache"', '"kv-cache+turbo"'), ("variant", "unknown plugin 'turbo'", "sdpa")),
    (GOOD.replace("batch_sizes = [1]", "batch_sizes = [0]"), ("batch_size", "> 0")),
    (GOOD.replace("new_tokens = 4", "new_tokens = -3"), ("new_tokens", "> 0")),
    (GOOD.replace("prompt_tokens = 8", "prompt_tokens = 600"),
     ("workload.prompt_tokens", "exceeds the model's context of 512")),
    (GOOD.replace("repeats = 1", "repeats = 1\nbatchsize = 2"), ("unknown key 'batchsize'",)),
    (GOOD.replace('model = "tiny-random"', 'model = "./no/such/dir"'), ("model", "not a built-in")),
    (GOOD.replace('device = "cpu"', 'device = "tpu"'), ("device", "auto, cpu, cuda")),
])
def test_bad_suite(tmp_path: Path, body: str, needles: tuple[str, ...]) -> None:
    suite = write_suite(tmp_path / "s.toml", body)
    out = tmp_path / "results"
    proc = cli("run", "--suite", str(suite), "--out", str(out), cwd=tmp_path)
    assert_one_line_error(proc, *needles)
    assert not out.exists() or not any(out.iterdir())


def test_model_dir_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    suite = write_suite(tmp_path / "s.toml", GOOD)
    proc = cli("run", "--suite", str(suite), "--model", str(tmp_path / "empty"),
               "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert_one_line_error(proc, "model", "has no config.json")


def test_unknown_suite_name(tmp_path: Path) -> None:
    assert_one_line_error(cli("run", "--suite", "nightly", cwd=tmp_path), "suite", "default")


def test_table_of_missing_csv(tmp_path: Path) -> None:
    assert_one_line_error(cli("table", str(tmp_path / "nope.csv"), cwd=tmp_path), "csv", "not found")


def test_plugins_lists_availability(tmp_path: Path) -> None:
    proc = cli("plugins", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sdpa-flash" in proc.stdout and "needs CUDA" in proc.stdout
    assert "test-missing" in proc.stdout  # outside plugin, via PYTHONPATH
