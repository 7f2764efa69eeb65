"""`infer-opt suites --show` takes a shipped name or a path, as `run --suite` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from .trust_helpers import assert_refused, cli, tiny_suite


def test_show_a_path_prints_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tiny_suite(tmp_path / "mine.toml", ["kv-cache", "kv-cache+sdpa"])
    code, out, err = cli(capsys, "suites", "--show", str(suite))
    assert code == 0, err
    assert out == suite.read_text()


def test_show_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    from infer_opt.run.suite import named_suites

    code, out, _ = cli(capsys, "suites", "--show", "quick")
    assert code == 0 and out == named_suites()["quick"].read_text(encoding="utf-8")


@pytest.mark.parametrize("show,needles", [
    ("no/such.toml", ("not found",)),
    ("nope", ("unknown suite 'nope'",)),
])
def test_show_refusals(capsys: pytest.CaptureFixture[str], show: str,
                       needles: tuple[str, ...]) -> None:
    code, _, err = cli(capsys, "suites", "--show", show)
    assert_refused(code, err, *needles)


def test_show_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text('group = ["a"]\n')
    code, _, err = cli(capsys, "suites", "--show", str(tmp_path / "bad.toml"))
    assert_refused(code, err, "group[0]")
