"""Helpers of the trust tests: throwaway distributions installed on sys.path for one test,
and the CLI contract (exit 0, or exit 2 with exactly one error line; never a traceback)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infer_opt.cli import main
from infer_opt.core import registry


@contextmanager
def installed(root: Path, dist: str, version: str, entry_points: str,
              modules: dict[str, str]) -> Iterator[None]:
    """A distribution `dist` (its dist-info and modules under `root`) on sys.path for the
    duration, found by importlib.metadata exactly as a pip-installed one; removed after."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)
    for name, text in modules.items():
        (root / f"{name}.py").write_text(text)
    sys.path.insert(0, str(root))
    registry.clear()
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in modules:
            sys.modules.pop(name, None)
        registry.clear()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`infer-opt ARGV` in this process: (exit code, stdout, stderr). An exception other than
    the CLI's own refusals escapes and fails the test: that is the traceback a user would see."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, err: str, *needles: str) -> str:
    """Exit 2 and exactly one line on stderr, the error, containing every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    errors = [ln for ln in lines if ln.startswith("infer-opt: error: ")]
    assert len(errors) == 1 and len(lines) == 1, err
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


TINY_SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 60
[[group]]
variants = {variants}
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 4
min_repeats = 1
max_repeats = 1
warmup_runs = 0
"""


def tiny_suite(path: Path, variants: list[str], extra: str = "", header: str = "") -> Path:
    import json

    path.write_text(header + TINY_SUITE.format(variants=json.dumps(variants)) + extra,
                    encoding="utf-8")
    return path
