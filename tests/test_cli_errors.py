"""Bad input: one clear line naming the field, exit code 2, nothing written.

Most cases call the CLI's `main` in this process (its exit code and stderr are what a shell
sees); the ones that depend on the process environment (offline hub access) run a subprocess.
"""

import contextlib
import io
import os
import subprocess
import sys
import time
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
min_repeats = 1
max_repeats = 1
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`infer-opt ARGS` in this process; paths in ARGS are absolute, so `cwd` is only a label."""
    from infer_opt.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


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
    (GOOD.replace("min_repeats = 1", "min_repeats = 1\nbatchsize = 2"), ("unknown key 'batchsize'",)),
    (GOOD.replace('model = "tiny-random"', 'model = "./no/such/dir"'), ("model", "not a built-in")),
    (GOOD.replace('device = "cpu"', 'device = "tpu"'), ("device", "auto, cpu, cuda")),
    (GOOD.replace('device = "cpu"', 'device = "cuda"'), ("device", "sees no CUDA device")),
    (GOOD.replace('"kv-cache"', '"kv-cache+static-cache"'),
     ("variant", "'kv-cache' and 'static-cache' both set kv_cache")),
    (GOOD.replace('"kv-cache"', '"ort+int8-bnb"'), ("'int8-bnb' works on engines torch",)),
    (GOOD.replace('"kv-cache"', '"compile+kv-cache"'), ("both set kv_cache",)),
    ('name = "a/b"\n' + GOOD, ("name", "'a/b' must be 1-64 letters")),
    ('name = "a\\tb"\n' + GOOD, ("name", "must be 1-64 letters")),
    ("timeout_s = 0\n" + GOOD, ("timeout_s", "> 0")),
    ("timeout_s = -5\n" + GOOD, ("timeout_s", "> 0")),
])
def test_bad_suite(tmp_path: Path, body: str, needles: tuple[str, ...]) -> None:
    suite = write_suite(tmp_path / "s.toml", body)
    out = tmp_path / "results"
    t0 = time.perf_counter()
    proc = cli("run", "--suite", str(suite), "--out", str(out), cwd=tmp_path)
    assert_one_line_error(proc, *needles)
    assert not out.exists()  # nothing written, not even the directory
    assert time.perf_counter() - t0 < 60  # refused up front


def test_hub_shaped_typo_fails_fast_offline(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.toml", GOOD.replace(
        'model = "tiny-random"', 'model = "HuggingFaceTB/SmolLM2-135M-Instrcut"'))
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.run([sys.executable, "-m", "infer_opt.cli", "run", "--suite", str(suite),
                           "--out", str(tmp_path / "r")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "model", "not in the local Hugging Face cache",
                          "--allow-download")
    assert time.perf_counter() - t0 < 25  # no network retries (they took 28 s before)


def test_binary_suite_file(tmp_path: Path) -> None:
    suite = tmp_path / "s.toml"
    suite.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    assert_one_line_error(cli("run", "--suite", str(suite), cwd=tmp_path), "not a text file")


@pytest.mark.parametrize("make_out", ["file", "under-a-file"])
def test_out_that_cannot_be_written(tmp_path: Path, make_out: str) -> None:
    suite = write_suite(tmp_path / "s.toml", GOOD)
    (tmp_path / "f").write_text("not a directory")
    out = tmp_path / "f" if make_out == "file" else tmp_path / "f" / "results"
    proc = cli("run", "--suite", str(suite), "--out", str(out), cwd=tmp_path)
    assert_one_line_error(proc, "--out", "is a file, not a directory")
    assert (tmp_path / "f").read_text() == "not a directory"


def test_unknown_variant_in_filter(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.toml", GOOD.replace('"kv-cache"', '"kv-cache", "sdpa"'))
    proc = cli("run", "--suite", str(suite), "--variants", "kv-cache,kv-cahce",
               "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert_one_line_error(proc, "--variants", "'kv-cahce' is not a variant", "kv-cache, sdpa")
    assert not (tmp_path / "r").exists()


def test_model_dir_without_safetensors(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"pickle")
    suite = write_suite(tmp_path / "s.toml", GOOD)
    proc = cli("run", "--suite", str(suite), "--model", str(model), "--out", str(tmp_path / "r"),
               cwd=tmp_path)
    assert_one_line_error(proc, "model", "no *.safetensors weights")


def test_thread_warning() -> None:
    from infer_opt.run.plan import thread_warning

    cores = os.cpu_count() or 1
    assert thread_warning(cores) is None
    assert f"exceeds this machine's {cores} cores" in thread_warning(cores + 1)


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
