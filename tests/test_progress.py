"""The progress display (commands/display.py) and the library warnings of a worker's load
(core/quiet.recorded): what reaches the terminal, what reaches the row's notes."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import pytest

from infer_opt.commands.display import Display, cell_line
from infer_opt.core.quiet import MAX_NOTES, recorded
from infer_opt.run.cell import Cell
from infer_opt.run.progress import CellDone, Loading, RunStarted, Timing

CELL = Cell(run_id="r", suite="s", index=0, model={"name": "m"}, variant="kv-cache",
            workload={"batch_size": 1, "prompt_tokens": 8, "new_tokens": 4}, device="cpu",
            threads=1, bandwidth_gb_per_s=1.0, group="g")
OK = {"status": "ok", "decode_tokens_per_s": 12.34, "ttft_ms_p50": 5.0, "timed_runs": 3}


def _timing(round_index: int) -> Timing:
    return Timing(group="g", workload="bs=1 prompt=8 new=4", workload_index=0, workloads=2,
                  round_index=round_index, max_rounds=10, variant="kv-cache", cells=2)


def test_plain_display_prints_one_line_per_finished_cell() -> None:
    out = io.StringIO()  # not a terminal
    with Display(out) as d:
        d.log("infer-opt: start")
        d.on_event(RunStarted("r", Path("x.csv"), 4, 1))
        for i in range(5):
            d.on_event(_timing(i))  # rounds: nothing printed off a terminal
        d.on_event(CellDone(1, 4, CELL, OK, 2.5))
        d.on_event(CellDone(2, 4, CELL, {"status": "failed", "reason": "boom"}, 3.0))
    assert out.getvalue().splitlines() == [
        "infer-opt: start",
        "[1/4] kv-cache bs=1 prompt=8 new=4: ok decode 12.3 tok/s, TTFT p50 5.0 ms, n=3 (2.5 s)",
        "[2/4] kv-cache bs=1 prompt=8 new=4: failed boom (3.0 s)"]
    assert d.csv_path == Path("x.csv")


def test_live_status_names_group_round_variant_and_times(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    now = [100.0]
    monkeypatch.setattr("infer_opt.commands.display.time.monotonic", lambda: now[0])
    d = Display(io.StringIO(), live=False)
    assert d.status() == "checking the suite and the machine · 0:00"
    d.on_event(RunStarted("r", Path("x.csv"), 4, 1))
    assert d.status() == "0/4 cells · 0:00 elapsed"
    d.on_event(Loading("g", "kv-cache", 1, 3))
    assert d.status() == "group g · loading kv-cache (2 of 3) · 0/4 cells · 0:00 elapsed"
    now[0] = 160.0
    d.on_event(CellDone(1, 4, CELL, OK, 60.0))
    d.on_event(_timing(4))
    # 1 cell done + 2 cells at 4 of at most 10 rounds = 1.8 of 4 cells in 60 s.
    assert d.status() == ("group g · workload 1/2 (bs=1 prompt=8 new=4) · round 5 of <=10 · "
                          "timing kv-cache · 1/4 cells · 1:00 elapsed · ~2:13 expected")


def test_live_display_on_a_terminal_prints_cells_and_clears_its_line() -> None:
    out = io.StringIO()
    with Display(out, live=True) as d:
        d.on_event(RunStarted("r", Path("x.csv"), 1, 1))
        d.on_event(_timing(0))
        d.on_event(CellDone(1, 1, CELL, OK, 1.0))
    assert "[1/1] kv-cache bs=1 prompt=8 new=4: ok" in out.getvalue()


def test_cell_line_without_a_total() -> None:
    assert cell_line(CellDone(3, 0, CELL, {"status": "ok", "timed_runs": 2}, 1.0)) == \
        "[3] kv-cache bs=1 prompt=8 new=4: ok n=2 (1.0 s)"


def test_load_warnings_go_to_notes_not_the_terminal(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFER_OPT_VERBOSE", raising=False)
    logging.getLogger("torchao").setLevel(logging.ERROR)
    notes = ["engine note"]
    with recorded(notes):
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s", "not trusted")
        logging.getLogger("torchao").warning(
            "Failed to load /x/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: no")
        warnings.warn("a deprecated argument was used", FutureWarning, stacklevel=1)
        warnings.warn("a deprecated argument was used", FutureWarning, stacklevel=1)
    assert notes == [
        "engine note",
        "bitsandbytes warned: Failed to load CPU gemm_4bit_forward from kernels-community: "
        "not trusted",
        "FutureWarning warned: a deprecated argument was used"]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    # Outside the block the library's logger is back at ERROR: a per-forward warning is cheap.
    assert not logging.getLogger("bitsandbytes").isEnabledFor(logging.WARNING)


def test_load_warnings_are_capped() -> None:
    notes: list[str] = []
    with recorded(notes):
        for i in range(10):
            warnings.warn(f"warning {i}", UserWarning, stacklevel=1)
    assert notes == [f"UserWarning warned: warning {i}" for i in range(MAX_NOTES)]
