"""compare, table and report refuse malformed results with one line and exit 2, writing
nothing, unless --point-ratios asks for point values; compare's header names OLD and NEW;
peak memory (one number per row) is shown, never gated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infer_opt.cli import main
from infer_opt.core.errors import UserError
from infer_opt.format.io import read_results
from infer_opt.results.compare import NOT_GATED, compare_runs

from .tables import flat
from .test_compare import fake_cell, metric, two_variants, write_run

BAD_CELLS = [("tpot_ms_p50", "nan"), ("decode_tokens_per_s", "-3.5"), ("ttft_ms_p99", "inf"),
             ("weight_mb", "lots"), ("e2e_ms_p50", "-inf"), ("kl_mean", "nan")]


def with_cell(path: Path, column: str, value: str) -> Path:
    row, s = fake_cell(0, "kv-cache", 10.0, 1)
    row1, s1 = fake_cell(1, "kv-cache+sdpa", 8.0, 2)
    row1[column] = value
    return write_run(path, [(row, s), (row1, s1)])


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> None:
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1, out
    for w in words:
        assert w in out.err


@pytest.mark.parametrize("column, value", BAD_CELLS)
def test_malformed_cells_are_refused_everywhere(tmp_path: Path, column: str, value: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    good = two_variants(tmp_path, "good", 1.0, seed=1)
    bad = with_cell(tmp_path / "bad.csv", column, value)
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in (["compare", str(good), str(bad)], ["table", str(bad)], ["report", str(bad)],
                 ["compare", str(bad), "--baseline-variant", "kv-cache"]):
        one_line_exit_2(argv, capsys, "bad.csv", f"{column} is {value!r}")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_kl_may_be_infinite(tmp_path: Path) -> None:
    # Non-finite logits give KL inf: a measurement, kept visible, not a malformed file.
    run = read_results(with_cell(tmp_path / "r.csv", "kl_mean", "inf"))
    assert run.rows[1]["kl_mean"] == "inf" and run.notes == []


def test_point_ratios_reads_malformed_cells_as_empty(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = two_variants(tmp_path, "good", 1.0, seed=1)
    bad = with_cell(tmp_path / "bad.csv", "tpot_ms_p50", "nan")
    assert main(["compare", str(good), str(bad), "--point-ratios"]) == 0
    out = flat(capsys.readouterr().out)
    assert "note: " in out and "tpot_ms_p50 is 'nan', not a finite number >= 0: read as empty" \
        in out
    assert main(["table", str(bad), "--point-ratios"]) == 0
    assert "read as empty" in capsys.readouterr().out


@pytest.mark.parametrize("damage, words", [
    ("delete", "bad.samples.jsonl is missing"),
    ("garbage-middle", "is corrupt (line 1 is not JSON)"),
    ("drop-first", "has no line for cell 0"),
    ("bad-shape", "is corrupt: cell 1: the lists in 'runs' differ in length"),
])
def test_damaged_samples_are_refused(tmp_path: Path, damage: str, words: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = two_variants(tmp_path, "good", 1.0, seed=1)
    bad = two_variants(tmp_path, "bad", 1.0, seed=2)
    sp = tmp_path / "bad.samples.jsonl"
    lines = sp.read_text().splitlines()
    if damage == "delete":
        sp.unlink()
    elif damage == "garbage-middle":
        sp.write_text("\n".join(["{not json"] + lines) + "\n")
    elif damage == "drop-first":
        sp.write_text("\n".join(lines[1:]) + "\n")
    else:
        s = json.loads(lines[1])
        s["runs"]["tpot_ms"].pop()
        sp.write_text("\n".join([lines[0], json.dumps(s)]) + "\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in (["compare", str(good), str(bad)], ["table", str(bad)], ["report", str(bad)]):
        one_line_exit_2(argv, capsys, words, "--point-ratios")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # Asked for: the same two runs compare on what is left, and say so.
    assert main(["compare", str(good), str(bad), "--point-ratios"]) == 0
    assert "note: " in capsys.readouterr().out


def test_the_last_rows_missing_line_is_an_interrupted_write(tmp_path: Path) -> None:
    bad = two_variants(tmp_path, "bad", 1.0, seed=2)
    sp = tmp_path / "bad.samples.jsonl"
    sp.write_text(sp.read_text().splitlines()[0] + "\n")
    run = read_results(bad)
    assert set(run.samples) == {"0"}
    assert run.notes == ["bad.samples.jsonl: no line for cell 1, the last row (an interrupted "
                         "write): that row has summary statistics only"]


def test_header_names_old_and_new(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = two_variants(tmp_path, "first", 1.0, seed=1)
    b = two_variants(tmp_path, "second", 1.0, seed=2)
    assert main(["compare", str(a), str(b)]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head == ("# compare: OLD first.csv -> NEW second.csv (changes are NEW relative to "
                    "OLD)")
    assert main(["compare", str(a), "--baseline-variant", "kv-cache"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "# compare: variants within first.csv (against kv-cache)")


def test_peak_memory_is_shown_never_gated(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def run(path: Path, rss: float) -> Path:
        row, s = fake_cell(0, "v", 10.0, 1)
        row.update(peak_rss_mb=rss, peak_device_mem_mb=rss)
        return write_run(path, [(row, s)])

    a, b = run(tmp_path / "a.csv", 300.0), run(tmp_path / "b.csv", 600.0)  # +100%
    cmp = compare_runs(read_results(a), read_results(b))
    for name in ("peak_rss_mb", "peak_device_mem_mb"):
        m = metric(cmp, "v", name)
        assert m.ratio == 2.0 and m.threshold is None and m.verdict == NOT_GATED
    assert not cmp.regressed
    assert main(["compare", str(a), str(b)]) == 0
    assert "| v static-batch bs=1 prompt=8 new=16 | peak_rss_mb | 300 | 600 | +100.0% |" in \
        flat(capsys.readouterr().out)  # shown by default
    one_line_exit_2(["compare", str(a), str(b), "--fail-above", "peak_rss_mb=5%"], capsys,
                    "--fail-above", "peak_rss_mb is one measurement per row")
    # A glob skips it: weight_mb is gated, peak memory is not.
    assert main(["compare", str(a), str(b), "--fail-above", "*_mb=5%"]) == 0


def test_a_plugins_own_metric_may_be_negative_not_nan(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from infer_opt.format import columns

    monkeypatch.setattr(columns, "_DECLARED", {
        "delta_pct": columns.from_metric("delta_pct", "higher")})
    row, s = fake_cell(0, "v", 10.0, 1)
    path = write_run(tmp_path / "r.csv", [({**row, "delta_pct": -2.5}, s)], extra=["delta_pct"])
    assert read_results(path).rows[0]["delta_pct"] == "-2.5"
    path = write_run(tmp_path / "r.csv", [({**row, "delta_pct": "nan"}, s)], extra=["delta_pct"])
    with pytest.raises(UserError, match="delta_pct is 'nan', not a number"):
        read_results(path)
