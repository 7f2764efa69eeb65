"""The guide's second plugin example (docs/extending.md, "A plugin with a parameter and a
column of its own"), registered from outside the package through a real entry point (a
dist-info on the path, as `pip install` leaves one) and used the way the guide says: listed,
refused for a bad value, run beside a plugin with a bug in its `apply`."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from infer_opt.core.stack import PluginFailed, build_stack, run_stack

from .conftest import FIXTURE_PLUGINS, REPO
from .trust_helpers import assert_refused, cli, installed, tiny_suite

MARK = "<!-- plugin-example-params -->"
# A plugin of the same distribution whose apply has a bug: a failed row, not a crashed run.
BUGGY = '''
from mlp_prune import MlpL1Prune


class Buggy(MlpL1Prune):
    name = "mlp-l1-prune-buggy"

    def apply(self, settings):
        raise RuntimeError("deliberate bug\\nsecond line")
'''
BUG_REASON = "mlp-l1-prune-buggy.apply raised RuntimeError: deliberate bug second line"


def guide_example() -> tuple[str, dict, dict]:
    """(the module, its pyproject tables, the suite to try it in) as the guide shows them."""
    after = (REPO / "docs" / "extending.md").read_text().split(MARK, 1)[1]
    code = re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)
    pyproject, suite = re.findall(r"```toml\n(.*?)```", after, re.DOTALL)[:2]
    return code, tomllib.loads(pyproject), tomllib.loads(suite)


def entry_points(pyproject: dict) -> str:
    eps = pyproject["project"]["entry-points"]["infer_opt.plugins"]
    return ("[infer_opt.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
            + "mlp-l1-prune-buggy = mlp_bugs:Buggy\n")


def modules() -> dict[str, str]:
    return {"mlp_prune": guide_example()[0], "mlp_bugs": BUGGY}


def test_the_example_is_what_its_pyproject_names() -> None:
    code, pyproject, suite = guide_example()
    assert pyproject["tool"]["setuptools"]["py-modules"] == ["mlp_prune"]
    assert entry_points(pyproject).splitlines()[1] == "mlp-l1-prune = mlp_prune:MlpL1Prune"
    assert "class MlpL1Prune(Plugin):" in code
    assert suite["group"][0]["variants"] == [
        "kv-cache", "kv-cache+mlp-l1-prune", "kv-cache+mlp-l1-prune[sparsity=0.8]"]


def test_plugins_lists_its_parameter_and_metric_column(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with installed(tmp_path / "site", "mlp-prune", "0.1.0", entry_points(guide_example()[1]),
                   modules()):
        code, out, err = cli(capsys, "plugins", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    width = lines[0].index("  here")
    i = next(n for n, ln in enumerate(lines) if ln.startswith("mlp-l1-prune "))
    assert lines[i] == ("mlp-l1-prune".ljust(width) + "  yes   " + "torch".ljust(15) + "  zero "
                        "the smallest-|w| share of each MLP Linear's weights "
                        "(torch.nn.utils.prune)  (from mlp-prune 0.1.0)")
    pad = " " * (width + 10)
    assert lines[i + 1:i + 3] == [
        pad + "[sparsity=0.5: share of each MLP weight matrix set to zero]",
        pad + "metric mlp_zero_pct (%): MLP weights that are exactly zero after pruning"]


@pytest.mark.parametrize("variant,message", [
    ("kv-cache+mlp-l1-prune[sparsity=1.5]",
     ("variant: 'kv-cache+mlp-l1-prune[sparsity=1.5]': plugin mlp-l1-prune: sparsity must be "
      "<= 0.95, got 1.5")),
    ("kv-cache+mlp-l1-prune[sparsity=lots]",
     ("variant: 'kv-cache+mlp-l1-prune[sparsity=lots]': plugin mlp-l1-prune: sparsity must be "
      "a number, got 'lots'")),
    ("kv-cache+mlp-l1-prune[spars=0.1]",
     ("variant: 'kv-cache+mlp-l1-prune[spars=0.1]': plugin mlp-l1-prune: unknown parameter "
      "'spars'; allowed: sparsity")),
])
def test_a_bad_value_is_one_line_and_writes_nothing(tmp_path: Path, variant: str, message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    suite = tiny_suite(tmp_path / "s.toml", ["kv-cache", variant])
    with installed(tmp_path / "site", "mlp-prune", "0.1.0", entry_points(guide_example()[1]),
                   modules()):
        code, _, err = cli(capsys, "run", "--suite", str(suite), "--out", str(tmp_path / "out"))
    assert assert_refused(code, err) == f"infer-opt: error: {message}"
    assert not (tmp_path / "out").exists()


def test_dry_run_says_which_variant_would_fail(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    suite = tiny_suite(tmp_path / "s.toml", ["kv-cache", "kv-cache+mlp-l1-prune-buggy"])
    with installed(tmp_path / "site", "mlp-prune", "0.1.0", entry_points(guide_example()[1]),
                   modules()):
        code, out, err = cli(capsys, "run", "--suite", str(suite), "--dry-run")
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert f"  kv-cache+mlp-l1-prune-buggy: engine torch -> FAILS: {BUG_REASON}" in lines
    assert "    [1] kv-cache+mlp-l1-prune-buggy (fails)" in lines
    assert lines[-1] == ("plan ok: 1 cells would run, 0 would be skipped, 1 would fail (a plugin "
                         "raised); nothing was loaded or written")


def test_the_example_runs_and_a_bug_in_apply_fails_only_its_rows(tmp_path: Path) -> None:
    _, pyproject, doc_suite = guide_example()
    site = tmp_path / "site"
    info = site / "mlp_prune-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlp-prune\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points(pyproject))
    for name, text in modules().items():
        (site / f"{name}.py").write_text(text)
    variants = doc_suite["group"][0]["variants"] + ["kv-cache+mlp-l1-prune-buggy"]
    suite = tiny_suite(tmp_path / "s.toml", variants)
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(FIXTURE_PLUGINS)]),
           "PATH": "/usr/bin:/bin", "INFER_OPT_BANDWIDTH_MIB": "64"}
    run = subprocess.run([sys.executable, "-m", "infer_opt.cli", "run", "--suite", str(suite),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert f"[4/4] kv-cache+mlp-l1-prune-buggy bs=1 prompt=8 new=4: failed {BUG_REASON}" in (
        run.stderr + run.stdout)
    csv_path = next((tmp_path / "r").glob("*.csv"))
    rows = {r["variant"]: r for r in csv.DictReader(csv_path.open())}
    assert [(v, rows[v]["status"]) for v in variants] == [
        ("kv-cache", "ok"), ("kv-cache+mlp-l1-prune", "ok"),
        ("kv-cache+mlp-l1-prune[sparsity=0.8]", "ok"), ("kv-cache+mlp-l1-prune-buggy", "failed")]
    assert rows["kv-cache+mlp-l1-prune-buggy"]["reason"] == BUG_REASON
    assert rows["kv-cache"]["mlp_zero_pct"] == ""
    assert float(rows["kv-cache+mlp-l1-prune"]["mlp_zero_pct"]) == pytest.approx(50.0, abs=0.01)
    assert float(rows["kv-cache+mlp-l1-prune[sparsity=0.8]"]["mlp_zero_pct"]) == pytest.approx(
        80.0, abs=0.01)
    assert rows["kv-cache+mlp-l1-prune"]["notes"] == "MLP L1 pruning 0.5"
    errors = csv_path.with_suffix(".errors.log").read_text()
    assert "RuntimeError: deliberate bug" in errors and "mlp_bugs.py" in errors
    table = csv_path.with_suffix(".md").read_text()
    assert "## Plugin metrics" in table and "mlp_zero_pct" in table


RAISES = '''
from infer_opt.core.plugin import Plugin


class InApply(Plugin):
    name = "bug-apply"
    summary = "raises in apply"

    def apply(self, settings):
        raise KeyError("missing")


class InInit(Plugin):
    name = "bug-init"
    summary = "raises in __init__"

    def __init__(self, **values):
        super().__init__(**values)
        raise ZeroDivisionError("division by zero")

    def apply(self, settings):
        pass
'''


def test_a_plugin_that_raises_while_its_stack_is_built(tmp_path: Path) -> None:
    eps = "[infer_opt.plugins]\nbug-apply = bugs:InApply\nbug-init = bugs:InInit\n"
    with installed(tmp_path / "site", "bugs", "0.1", eps, {"bugs": RAISES}):
        with pytest.raises(PluginFailed) as err:
            build_stack("kv-cache+bug-apply", "cpu")
        assert str(err.value) == "bug-apply.apply raised KeyError: 'missing'"
        stack = run_stack("kv-cache+bug-apply", "cpu")
        assert (stack.variant, stack.engine.name, stack.plugins, stack.unavailable) == (
            "kv-cache+bug-apply", "torch", [], None)
        assert stack.failed == "bug-apply.apply raised KeyError: 'missing'"
        assert stack.failed_traceback.startswith("Traceback (most recent call last):")
        assert stack.failed_traceback.endswith("KeyError: 'missing'\n")
        assert run_stack("bug-init", "cpu").failed == (
            "bug-init.__init__ raised ZeroDivisionError: division by zero")
        assert run_stack("kv-cache", "cpu").failed is None
