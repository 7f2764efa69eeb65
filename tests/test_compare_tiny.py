"""compare on real runs of the tiny model, with a deliberately slowed variant (test-slow: a
fixture plugin that busy-waits 15% of every forward step).

The tests marked `timing` assert what the gate concludes from measured times: they hold on a
machine that other jobs do not saturate (deselect with -m "not timing" on a crowded box).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infer_opt.cli import main
from infer_opt.format.io import read_results
from infer_opt.results.compare import compare_runs
from infer_opt.run.runner import run_suite
from infer_opt.run.suite import load_suite

from .conftest import write_suite
from .tables import flat

SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 120
[[group]]
variants = {variants}
batch_sizes = [1]
prompt_tokens = 16
new_tokens = 32
min_repeats = 6
max_repeats = 6
warmup_runs = 1
"""


def _run(tmp: Path, name: str, variants: str) -> Path:
    suite = load_suite(str(write_suite(tmp / f"{name}.toml", SUITE.format(variants=variants))))
    return run_suite(suite, tmp / "results", log=lambda _m: None)


@pytest.fixture(scope="module")
def slowed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("cmp"), "a", '["kv-cache", "kv-cache+test-slow"]')


def test_a_run_against_itself_uses_samples_and_passes(slowed_run: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(slowed_run), str(slowed_run)]) == 0
    assert "no regression in 2 matched rows" in flat(capsys.readouterr().out)
    cmp = compare_runs(read_results(slowed_run), read_results(slowed_run))
    tpot = next(m for m in cmp.rows[0].metrics if m.metric == "tpot_ms_p50")
    assert tpot.ratio == 1.0 and tpot.ci is not None and tpot.ci[0] <= 1.0 <= tpot.ci[1]


@pytest.mark.timing
def test_slowed_variant_is_flagged_against_its_base(slowed_run: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(slowed_run), "--baseline-variant", "kv-cache"]) == 1
    tail = flat(capsys.readouterr().out).split("REGRESSION in 1 of 1 rows:", 1)[1]
    assert "kv-cache+test-slow static-batch bs=1 prompt=16 new=32: itl_ms_p50 +" in tail


@pytest.mark.timing
def test_back_to_back_runs_pass(slowed_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    again = _run(slowed_run.parent.parent, "b", '["kv-cache"]')
    code = main(["compare", str(slowed_run), str(again)])
    out = flat(capsys.readouterr().out)
    assert code == 0, out
    assert "only in old: kv-cache+test-slow static-batch bs=1 prompt=16 new=32" in out
