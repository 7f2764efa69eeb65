"""Faults end cleanly: a signal or a full disk stops a run with one line, whole rows kept, no
worker tracebacks, no litter; scratch folders of dead runs are removed by the next run."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infer_opt import cli
from infer_opt.format.io import ResultsWriter, read_results
from infer_opt.run import faults
from infer_opt.run.fidelity import run_store_dir
from infer_opt.run.scratch import Scratch, remove_stale

from .conftest import REPO, write_suite

# A quick first group (a row within seconds), then a group that stays in its rounds for long.
SUITE = """
model = "tiny-random"
allow_long_cells = true  # the second group runs until the signal comes
device = "cpu"
threads = 1
timeout_s = 120
[[group]]
name = "quick"
variants = ["kv-cache"]
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 4
min_repeats = 1
max_repeats = 1
warmup_runs = 0
[[group]]
name = "long"
variants = ["kv-cache", "kv-cache+test-slow[pct=300]", "baseline"]
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 16
min_repeats = 2000
max_repeats = 2000
max_timed_s = 600
warmup_runs = 1
"""

START = ("infer-opt: suite", "infer-opt: measured", "infer-opt: writing", "infer-opt: warning")


def _is_progress(line: str) -> bool:
    return line.startswith("[")  # "[3/7] variant ...: ok ..." a finished cell


def _dead_scratch(folder: Path) -> Path:
    """A scratch folder whose owner was killed with -9 mid-run, a half-written file inside."""
    code = ("import time\nfrom pathlib import Path\n"
            "from infer_opt.run.scratch import Scratch\n"
            f"s = Scratch(Path({str(folder)!r}))\n"
            "(s.path / 'half.json.tmp').write_text('{')\n"
            "print('ready', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert folder.is_dir()
    return folder


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_prints_one_line_and_keeps_whole_rows(
        tmp_path: Path, signum: int, code: int) -> None:
    stale = _dead_scratch(run_store_dir(f"test-faults-dead-{signum}-{os.getpid()}"))
    suite = write_suite(tmp_path / "s.toml", SUITE)
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    # Its own process group: SIGINT then goes to every process of the run, as a terminal's
    # Ctrl-C does (the workers too); SIGTERM goes to the main process only, as `kill` does.
    proc = subprocess.Popen([sys.executable, "-m", "infer_opt.cli", "run", "--suite",
                             str(suite), "--out", str(out)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stderr is not None
    before: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, f"the run ended before its first row: {''.join(before)}"
        before.append(line)
        if _is_progress(line):
            break
    assert not stale.exists(), "the dead run's scratch folder must be gone once the run writes"
    time.sleep(4)  # the long group's workers load and start their rounds
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    after = [x for x in err.splitlines() if x.strip()]
    assert proc.returncode == code, err
    assert "Traceback" not in "".join(before) + err
    assert [x for x in after if not _is_progress(x)] == [
        f"infer-opt: interrupted by {signal.Signals(signum).name}; finished rows are kept"]
    [csv_path] = out.glob("*.csv")
    run = read_results(csv_path)  # whole lines only: nothing dropped as torn
    assert run.notes == []
    assert len(run.rows) >= 1 and run.rows[0]["status"] == "ok"
    assert csv_path.with_suffix(".md").is_file()  # the finished rows got their table
    assert not list(out.glob("*.tmp"))
    assert not run_store_dir(run.rows[0]["run_id"]).exists()


TWO_CELLS = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 120
[[group]]
variants = ["kv-cache", "baseline"]
batch_sizes = [1]
prompt_tokens = 8
new_tokens = 4
min_repeats = 1
max_repeats = 1
warmup_runs = 0
"""


def test_a_full_disk_stops_the_run_with_one_line_and_whole_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    real_add = ResultsWriter.add
    calls = []

    def add(self: ResultsWriter, row: dict, samples: dict) -> None:
        calls.append(1)
        if len(calls) == 1:
            return real_add(self, row, samples)
        self._csv.write("half,a,row")  # what a write cut short by ENOSPC leaves
        self._csv.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ResultsWriter, "add", add)
    suite = write_suite(tmp_path / "s.toml", TWO_CELLS)
    out = tmp_path / "results"
    rc = cli.main(["run", "--suite", str(suite), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("infer-opt: error: disk full while writing ")
    assert last.endswith("(No space left on device); the run stopped; 1 finished rows are kept")
    assert "Traceback" not in err
    [csv_path] = out.glob("*.csv")
    assert csv_path.read_text().endswith("\n")  # the half row is cut off
    run = read_results(csv_path)
    assert run.notes == [] and len(run.rows) == 1
    assert len(csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()) == 1
    assert sorted(p.suffix for p in out.iterdir()) == [".csv", ".jsonl"]  # no table, no temp
    assert not run_store_dir(run.rows[0]["run_id"]).exists()


def test_stale_scratch_of_a_dead_run_goes_and_a_live_runs_stays(tmp_path: Path) -> None:
    parent = tmp_path / "runs"
    dead = _dead_scratch(parent / "dead")
    live = Scratch(parent / "live")
    (live.path / "x.json").write_text("{}")
    old_unlocked = parent / "old"
    old_unlocked.mkdir()
    young_unlocked = parent / "young"
    young_unlocked.mkdir()
    os.utime(old_unlocked, (0, 0))
    assert remove_stale(parent) == [dead, old_unlocked]
    assert not dead.exists() and not (parent / "dead.lock").exists()
    assert (live.path / "x.json").is_file() and young_unlocked.is_dir()
    with pytest.raises(RuntimeError, match="owned by a live process"):
        Scratch(parent / "live")
    live.release()
    assert not live.path.exists() and not (parent / "live.lock").exists()


def test_a_signal_inside_held_waits_for_the_block() -> None:
    saved = faults.install()
    try:
        done = []
        with pytest.raises(faults.Interrupted) as info:
            with faults.held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run: it must not have raised here
                done.append(1)
        assert done == [1] and info.value.exit_code == 143
        # The run is ending: a second signal is dropped so cleanup is not cut short.
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    finally:
        faults.restore(saved)
