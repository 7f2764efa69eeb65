"""The one artifact cache (core/artifacts.py): digests on known bytes, one build per key under
concurrent threads and processes, no half artifact after a raise or a killed child, a stale
scratch of a dead builder removed, a changed input rebuilt under a new key. No model is loaded."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from infer_opt.core import artifacts
from infer_opt.core.artifacts import (
    build_dir,
    cached_build,
    file_digest,
    key_digest,
    model_digest,
    weights_digest,
)

REPO = Path(__file__).resolve().parents[1]
# FIPS 180-2 test vectors.
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
SHA256_MILLION_A = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFER_OPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(artifacts, "_DIGESTS", {})
    # Build children unpickle this module's builders by name: `tests.test_artifacts`.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


# --- builders (module level: the child process unpickles them by name) ------------------------


def write_done(text: str, out: Path) -> None:
    (out / "done.txt").write_text(text)


def logged_build(log: str, pause_s: float, out: Path) -> None:
    """Appends this process's pid and thread to `log` (one line per build), then finishes."""
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()} {threading.get_ident()}\n")
    time.sleep(pause_s)  # long enough for the other builders to queue on the lock
    (out / "done.txt").write_text(str(os.getpid()))


def env_build(out: Path) -> None:
    (out / "done.txt").write_text(json.dumps({"pid": os.getpid(),
                                              "omp": os.environ.get("OMP_NUM_THREADS"),
                                              "build": artifacts.child_threads()}))


def half_then_fail(out: Path) -> None:
    (out / "half.bin").write_bytes(b"x" * 100)
    raise ValueError("converter ran out of luck")


def half_then_killed(out: Path) -> None:
    (out / "half.bin").write_bytes(b"x" * 100)
    os.kill(os.getpid(), signal.SIGKILL)


def graph_with_data(out: Path) -> None:
    """A file artifact and its companion, as an ONNX graph with external data."""
    (out / "model.q.onnx.data").write_bytes(b"weights")
    (out / "model.q.onnx").write_bytes(b"graph")


def companion_then_fail(out: Path) -> None:
    (out / "model.q.onnx.data").write_bytes(b"weights")
    raise ValueError("no graph")


def leftovers(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.build-*"))


# --- digests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content, want", [(b"", SHA256_EMPTY), (b"abc", SHA256_ABC),
                                           (b"a" * 1_000_000, SHA256_MILLION_A)])
def test_file_digest_is_sha256_of_the_bytes(tmp_path: Path, content: bytes, want: str) -> None:
    f = tmp_path / "f"
    f.write_bytes(content)
    assert file_digest(f) == want
    old = time.time() - 60  # old enough to be cached on disk, then read back from there
    os.utime(f, (old, old))
    assert file_digest(f) == want
    artifacts._DIGESTS.clear()
    assert file_digest(f) == want


def test_file_digest_streams_across_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB + 1792 bytes: four 1 MiB reads
    f = tmp_path / "big"
    f.write_bytes(data)
    assert file_digest(f) == hashlib.sha256(data).hexdigest()


def test_file_digest_follows_content_rewritten_in_place(tmp_path: Path) -> None:
    f = tmp_path / "w"
    f.write_bytes(b"abc")
    assert file_digest(f) == SHA256_ABC
    f.write_bytes(b"")  # same path, same inode, within the racy window
    assert file_digest(f) == SHA256_EMPTY


def test_weights_digest_exact(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    (m / "model.safetensors").write_bytes(b"")
    (m / "config.json").write_bytes(b"abc")
    (m / "README.md").write_text("not the model")  # not a weight file: not hashed
    lines = f"config.json\0{SHA256_ABC}\nmodel.safetensors\0{SHA256_EMPTY}\n"
    want = hashlib.sha256(lines.encode()).hexdigest()
    assert weights_digest(m) == want
    assert model_digest(str(m)) == want
    (m / "README.md").write_text("edited")
    assert weights_digest(m) == want
    (m / "extra.gguf").write_bytes(b"abc")  # a GGUF is weights too
    lines += f"extra.gguf\0{SHA256_ABC}\n"
    assert weights_digest(m) != want
    # Sorted by name: config.json, extra.gguf, model.safetensors.
    want2 = hashlib.sha256((f"config.json\0{SHA256_ABC}\nextra.gguf\0{SHA256_ABC}\n"
                            f"model.safetensors\0{SHA256_EMPTY}\n").encode()).hexdigest()
    assert weights_digest(m) == want2


def test_weights_digest_is_content_not_place(tmp_path: Path) -> None:
    for name, content in (("a", b"abc"), ("b", b"abc"), ("c", b"abd")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(content)
    a, b, c = (weights_digest(tmp_path / n) for n in "abc")
    assert a == b != c
    assert model_digest("org/some-hub-id") == "org/some-hub-id"  # not a directory: its name


def test_key_digest_is_sorted_json() -> None:
    want = hashlib.sha256(b'{"a": 1, "b": [2, "x"]}').hexdigest()[:12]
    assert key_digest({"b": [2, "x"], "a": 1}) == key_digest({"a": 1, "b": [2, "x"]}) == want
    assert key_digest({"a": 2, "b": [2, "x"]}) != want


# --- one build, published whole ---------------------------------------------------------------


def test_builds_once_and_reuses(tmp_path: Path) -> None:
    target = tmp_path / "kind" / "m-fp32-abc"
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        assert out.parent == target.parent and out.name.startswith(".m-fp32-abc.build-")
        write_done("1", out)

    assert cached_build(target, build, done="done.txt") > 0.0
    assert cached_build(target, build, done="done.txt") == 0.0
    assert len(calls) == 1 and (target / "done.txt").read_text() == "1"
    assert leftovers(target.parent, target.name) == []


@pytest.mark.parametrize("child", [False, True])
def test_a_build_that_raises_leaves_nothing_and_the_next_call_builds(tmp_path: Path,
                                                                     child: bool) -> None:
    target = tmp_path / "t"
    with pytest.raises((ValueError, RuntimeError), match="ran out of luck"):
        cached_build(target, half_then_fail, done="done.txt", child=child, what="conversion",
                     threads=1)
    assert not target.exists() and leftovers(tmp_path, "t") == []
    assert cached_build(target, functools.partial(write_done, "ok"), done="done.txt",
                        child=child, threads=1) > 0.0
    assert (target / "done.txt").read_text() == "ok" and not (target / "half.bin").exists()


def test_child_error_is_one_line_naming_the_build(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        cached_build(tmp_path / "t", half_then_fail, done="done.txt", child=True,
                     what="CTranslate2 conversion (int8)", threads=1)
    assert str(err.value) == ("CTranslate2 conversion (int8) failed: "
                              "ValueError: converter ran out of luck")


def test_a_build_that_writes_no_done_file_is_not_published(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the export wrote no done.txt"):
        cached_build(tmp_path / "t", lambda out: None, done="done.txt", what="the export")
    assert not (tmp_path / "t").exists() and leftovers(tmp_path, "t") == []


@pytest.mark.timeout(120)
def test_a_child_killed_mid_build_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "t"
    with pytest.raises(RuntimeError, match="student failed: -9"):
        cached_build(target, half_then_killed, done="done.txt", child=True, what="student",
                     threads=1)
    assert not target.exists() and leftovers(tmp_path, "t") == []
    assert cached_build(target, functools.partial(write_done, "ok"), done="done.txt",
                        child=True, threads=1) > 0.0


@pytest.mark.timeout(120)
def test_the_child_runs_elsewhere_with_the_thread_count(tmp_path: Path) -> None:
    target = tmp_path / "t"
    cached_build(target, env_build, done="done.txt", child=True, threads=3)
    seen = json.loads((target / "done.txt").read_text())
    assert seen["pid"] != os.getpid() and seen["omp"] == "3" and seen["build"] == 3


def test_a_child_build_must_pickle(tmp_path: Path) -> None:
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        cached_build(tmp_path / "t", lambda out: None, done="done.txt", child=True, threads=1)
    assert not (tmp_path / "t").exists() and leftovers(tmp_path, "t") == []


# --- file artifacts (a graph and its companion beside an existing folder) ---------------------


@pytest.mark.parametrize("child", [False, True])
def test_a_file_artifact_is_published_with_its_companion(tmp_path: Path, child: bool) -> None:
    target = tmp_path / "model.q.onnx"
    assert cached_build(target, graph_with_data, child=child, threads=1) > 0.0
    assert target.read_bytes() == b"graph"
    assert (tmp_path / "model.q.onnx.data").read_bytes() == b"weights"
    assert cached_build(target, graph_with_data, child=child, threads=1) == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.q.onnx", "model.q.onnx.data", "model.q.onnx.lock"]


def test_a_failed_file_build_publishes_no_companion(tmp_path: Path) -> None:
    target = tmp_path / "model.q.onnx"
    with pytest.raises(ValueError):
        cached_build(target, companion_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.q.onnx.lock"]


# --- a dead builder's scratch -----------------------------------------------------------------


def test_a_stale_scratch_is_removed_by_the_next_builder(tmp_path: Path) -> None:
    target = tmp_path / "m-v1"
    dead = tmp_path / ".m-v1.build-dead123"
    dead.mkdir()
    (dead / "half.bin").write_bytes(b"x")
    other = tmp_path / ".m-v2.build-alive456"  # another target's builder: not ours to remove
    other.mkdir()
    cached_build(target, functools.partial(write_done, "ok"), done="done.txt")
    assert not dead.exists() and other.is_dir()
    assert leftovers(tmp_path, "m-v1") == []


SCRIPT = """
import functools, sys
from pathlib import Path
from infer_opt.core.artifacts import cached_build
from tests import test_artifacts as t
build = {"kill": t.half_then_killed,
         "log": functools.partial(t.logged_build, sys.argv[3], float(sys.argv[4]))}[sys.argv[2]]
print(cached_build(Path(sys.argv[1]), build, done="done.txt"))
"""


def builder(target: Path, kind: str, log: Path | None = None, pause_s: float = 0.0
            ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(target), kind, str(log), str(pause_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


@pytest.mark.timeout(120)
def test_a_builder_killed_mid_build_is_cleaned_up_after(tmp_path: Path) -> None:
    """The building process itself dies (no finally runs): its lock goes with it, its scratch
    stays until the next builder of that target removes it and builds."""
    target = tmp_path / "m-v1"
    proc = builder(target, "kill")
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and len(leftovers(tmp_path, "m-v1")) == 1
    assert cached_build(target, functools.partial(write_done, "ok"), done="done.txt") > 0.0
    assert (target / "done.txt").read_text() == "ok" and leftovers(tmp_path, "m-v1") == []


# --- concurrent builders ----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_concurrent_threads_build_once(tmp_path: Path) -> None:
    target, log = tmp_path / "m-v1", tmp_path / "builds.log"
    start = threading.Barrier(6)
    seconds: list[float] = []

    def one() -> None:
        start.wait()
        seconds.append(cached_build(target, functools.partial(logged_build, str(log), 0.3),
                                    done="done.txt"))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log.read_text().splitlines()) == 1  # one build
    assert sorted(s > 0 for s in seconds) == [False] * 5 + [True]  # the others reused it
    assert leftovers(tmp_path, "m-v1") == []


@pytest.mark.timeout(120)
def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    target, log = tmp_path / "m-v1", tmp_path / "builds.log"
    procs = [builder(target, "log", log, 1.0) for _ in range(4)]
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    assert (target / "done.txt").read_text() == lines[0].split()[0]  # the builder's pid
    seconds = [float(out.strip()) for out, _ in outs]
    assert sorted(s > 0 for s in seconds) == [False] * 3 + [True]


# --- keys: a changed input builds anew, the same input reuses ---------------------------------


def test_a_changed_input_builds_a_new_artifact(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"vocab_size": 8}')
    (model / "model.safetensors").write_bytes(b"weights one")
    key = {"recipe": 1, "quantization": "int8"}
    first = build_dir("ct2", str(model), key, "int8")
    assert first.parent == tmp_path / "cache" / "ct2" and first.name.startswith("model-int8-")
    assert cached_build(first, functools.partial(write_done, "one"), done="done.txt") > 0.0
    assert build_dir("ct2", str(model), dict(key), "int8") == first  # same input
    assert cached_build(first, functools.partial(write_done, "x"), done="done.txt") == 0.0
    (model / "model.safetensors").write_bytes(b"weights two")  # same path, other content
    second = build_dir("ct2", str(model), key, "int8")
    assert second != first
    assert cached_build(second, functools.partial(write_done, "two"), done="done.txt") > 0.0
    assert (first / "done.txt").read_text() == "one"  # the old artifact is left as it was
    assert build_dir("ct2", str(model), {**key, "recipe": 2}, "int8") not in (first, second)


def test_the_onnx_export_is_keyed_by_content_not_path(tmp_path: Path) -> None:
    from infer_opt.engines.onnx.export import export_dir
    from infer_opt.engines.onnx.genai_build import graph_dir

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "model.safetensors").write_bytes(b"w")
    for key_of in (lambda p: export_dir(str(p), "float32", "eager"), lambda p: graph_dir(str(p))):
        a, b = key_of(tmp_path / "a"), key_of(tmp_path / "b")
        assert a.name.removeprefix("a-") == b.name.removeprefix("b-")
        (tmp_path / "b" / "model.safetensors").write_bytes(b"v")
        assert key_of(tmp_path / "b").name.removeprefix("b-") != a.name.removeprefix("a-")
        (tmp_path / "b" / "model.safetensors").write_bytes(b"w")


# --- every builder goes through cached_build, with a build a child can run --------------------


def test_every_builder_uses_cached_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infer_opt.engines.ct2 import export as ct2_export
    from infer_opt.engines.onnx import export as onnx_export
    from infer_opt.engines.onnx import genai_build, nbits
    from infer_opt.engines.openvino import export as ov_export

    calls: list[tuple[Path, Any, dict[str, Any]]] = []

    def fake(target: Path, build: Any, **kwargs: Any) -> float:
        calls.append((target, build, kwargs))
        return 0.0

    for module in (onnx_export, genai_build, nbits, ct2_export, ov_export):
        monkeypatch.setattr(module, "cached_build", fake)
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    onnx_export.ensure_export(str(model), "float32", "eager", int8=True)
    genai_build.ensure_graph(str(model), 1)
    nbits.ensure_variant(tmp_path / "model.onnx", nbits.WeightSpec(source="rtn"), 1)
    assert nbits.ensure_variant(tmp_path / "model.onnx", nbits.WeightSpec(), 1) == (
        tmp_path / "model.onnx", 0.0)  # nothing to rewrite: the graph as built
    ct2_export.ensure_model(str(model), "int8")
    ov_export.ensure_ir(str(model), ov_export.weight_config(4, 32, False))
    assert len(calls) == 6 and all(kw["child"] for _, _, kw in calls)
    for _, build, _ in calls:  # the child unpickles it: module-level functions and plain data
        assert pickle.loads(pickle.dumps(build)).func is build.func
    assert calls[1][0].name.startswith("model.int8") and calls[1][2].get("done") is None
    assert calls[3][0].name.startswith("model.rtn-")
