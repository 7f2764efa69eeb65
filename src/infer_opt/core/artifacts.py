"""Artifacts built once and cached: converted models, exported and quantized graphs, students.

One mechanism for every one of them (`cached_build`):

- a key: everything that changes the output (the model's *content*, never its path; the
  conversion settings; the library versions; a recipe version) hashed into the target's name,
  so a changed input builds a new artifact beside the old one instead of reusing it;
- a file lock on the target: of several processes or threads that need the same artifact, one
  builds and the others wait, then reuse it;
- a scratch folder beside the target, named after it; the build writes only there;
- an atomic publish (rename): a reader sees the whole artifact or none of it. A build that
  raises, or a child killed mid-build, leaves no target; the next caller builds again. A scratch
  left by a builder that died (power cut, SIGKILL) is removed by the next builder of that target,
  which holds the lock, so no live builder can own it;
- optionally in a child process (`child=True`): the converter's memory then never counts in the
  measuring process's peak RSS, and it runs with the suite's thread count.

Content digests (`file_digest`, `weights_digest`) are the one way any cache here names a model's
content: the fidelity reference, every converted model and the distilled student.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import importlib.metadata as md
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Files whose content is the model (weights_digest).
WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.bin", "*.gguf")
RACY_S = 2.0  # a file modified this recently is re-hashed every time (its mtime may repeat)
_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # in-process memo of file_digest
CHILD_MODULE = "infer_opt.core.artifacts"


def cache_root() -> Path:
    return Path(os.environ.get("INFER_OPT_CACHE", Path.home() / ".cache" / "infer-opt"))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold `<path>.lock` exclusively: two processes (or threads) preparing the same cache
    entry must not both write it. flock: released by the kernel if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # name + ".lock", not with_suffix: "m-torch2.13.0-ab12" must not share "m-torch2.13.lock".
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def publish(scratch: Path, target: Path) -> None:
    """Atomic rename of a finished build folder: readers never see a half-written artifact."""
    if target.exists():  # an unfinished folder from before (it lacks its done file)
        shutil.rmtree(target)
    os.replace(scratch, target)


def version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "none"


# --- content digests ---------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """sha256 (hex) of a file's content, streamed; cached on disk by (path, size, mtime, inode).

    Every cell of a run checks its caches, in its own process: the disk cache makes that a
    stat() per file instead of hashing 500 MB. A file written within RACY_S seconds is hashed
    every time and never cached (as git treats "racily clean" files): a file rewritten in place
    within the filesystem's timestamp granularity could otherwise keep the old key.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _DIGESTS:
        return _DIGESTS[key]
    name = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    store = cache_root() / "digests" / f"{name}.txt"
    if store.is_file():
        digest = store.read_text(encoding="utf-8").strip()
    else:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if time.time() - st.st_mtime_ns / 1e9 <= RACY_S:
            return digest  # too fresh to trust its mtime as a key
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(digest, encoding="utf-8")
        tmp.replace(store)
    _DIGESTS[key] = digest
    return digest


def weights_digest(model_dir: Path) -> str:
    """sha256 (hex) over the names and content digests of a model directory's config.json and
    weight files (WEIGHT_PATTERNS), one line `name NUL digest LF` each, by name: a directory
    overwritten with other weights gets another key; the same files elsewhere, the same key."""
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in model_dir.glob(pattern)
                    if p.is_file()})
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{file_digest(p)}\n".encode())
    return h.hexdigest()


def model_digest(model_path: str) -> str:
    """The content of a local model directory (weights_digest), else the name as given (a hub
    id: its name is all that is known without downloading)."""
    p = Path(model_path)
    return weights_digest(p) if p.is_dir() else model_path


def key_digest(key: dict[str, Any]) -> str:
    """12 hex digits of sha256 over the key as sorted JSON: the hash part of a cache name."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def build_dir(kind: str, model_path: str, key: dict[str, Any], label: str) -> Path:
    """Cache folder of one build: <cache>/<kind>/<model>-<label>-<hash of model and key>."""
    full = {"model": model_digest(model_path), **key}
    return cache_root() / kind / f"{Path(model_path).name}-{label}-{key_digest(full)}"


# --- the build ---------------------------------------------------------------------------------


def cached_build(target: Path, build: Callable[[Path], None], *, done: str | None = None,
                 child: bool = False, what: str = "build", threads: int | None = None) -> float:
    """Make `target` once; the seconds spent building (0.0 when it was there, or another
    process built it while this one waited for the lock).

    `build(scratch)` writes into a fresh folder beside the target. Two shapes of artifact:
    - a folder (`done` names the file in it whose presence marks a finished build): the
      scratch folder is renamed to `target`;
    - a file (`done` None): the build writes `scratch/<target.name>` and any companions (an
      ONNX graph's external .data file); the companions are moved beside `target` first and
      `target` last, so its presence means the whole is there.
    `child`: run `build` in a fresh interpreter (it must pickle: a module-level function or a
    functools.partial of one) with `threads` (default: torch's) as its thread count; a failure
    raises RuntimeError("<what> failed: <the child's last output line>").
    """
    def finished() -> bool:
        return (target / done).is_file() if done else target.is_file()

    if finished():
        return 0.0
    prefix = f".{target.name}.build-"
    with locked(target):
        if finished():
            return 0.0
        for stale in target.parent.glob(glob.escape(prefix) + "*"):  # of a builder that died
            shutil.rmtree(stale, ignore_errors=True)
        t0 = time.perf_counter()
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix))
        try:
            if child:
                run_child(build, scratch, what, threads)
            else:
                build(scratch)
            made = scratch / (done or target.name)
            if not made.is_file():
                raise RuntimeError(f"{what} wrote no {made.name}")
            if done:
                publish(scratch, target)
            else:
                for f in scratch.iterdir():
                    if f != made:
                        os.replace(f, target.with_name(f.name))
                os.replace(made, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # nothing left after a folder publish
        return time.perf_counter() - t0


def run_child(build: Callable[[Path], None], out: Path, what: str,
              threads: int | None = None) -> None:
    """`build(out)` in a fresh interpreter (`python -m infer_opt.core.artifacts`, the call
    pickled over its stdin), with `threads` threads; on failure a RuntimeError carrying the
    child's last output line."""
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    env = dict(os.environ, INFER_OPT_BUILD_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", CHILD_MODULE], input=pickle.dumps((build, out)),
                          capture_output=True, env=env)
    if proc.returncode != 0:
        text = (proc.stderr + proc.stdout).decode(errors="replace")
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        raise RuntimeError(f"{what} failed: {lines[-1] if lines else proc.returncode}")


def child_threads() -> int:
    """In a build child: the thread count its parent passed. A build that uses torch sets it
    (torch.set_num_threads): torch caps OMP_NUM_THREADS at the core count, and importing torch
    here for every child would cost seconds to builds that never use it."""
    return int(os.environ.get("INFER_OPT_BUILD_THREADS", "2"))


def _child_main() -> int:
    build, out = pickle.loads(sys.stdin.buffer.read())  # written by run_child, our own parent
    build(out)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
