"""Two runs of the same suite, back to back, compared: is a quiet machine's run-to-run drift
told apart from a regression?

    .venv/bin/python bench/checks/back_to_back.py --suite default            # ~2 x 10 min
    .venv/bin/python bench/checks/back_to_back.py --suite quick --load 1 \
        --reference-variant kv-cache                                          # 2nd run under load

`--load N` starts N busy-looping processes (one core each) for the second run only: a machine
that is uniformly slower. Prints `infer-opt compare` normalized by the reference variant
(default) and with `--absolute`, then the median and worst |change| of the rows' median TPOT.
Expected (issue "Numbers you can defend"): normalized, exit 0 and no row flagged; under load
the summary reports the drift, and `--absolute` shows it. Run alone, outside `make test`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def spin() -> None:
    while True:
        pass


def run(suite: str, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "infer_opt.cli", "run", "--suite", suite, "--out",
                    str(out)], check=True, stdout=subprocess.DEVNULL)
    return next(out.glob("*.csv"))


def compare(old: Path, new: Path, *extra: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "infer_opt.cli", "compare", str(old), str(new),
                           *extra], capture_output=True, text=True)
    print(proc.stdout + proc.stderr)
    print(f"exit code {proc.returncode}\n")
    return proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="default")
    ap.add_argument("--load", type=int, default=0, help="busy processes during the second run")
    ap.add_argument("--out", default=None)
    ap.add_argument("--reference-variant", default=None,
                    help="passed to compare: the variant every workload is normalized by (it "
                         "must have a row on each workload; quick: kv-cache)")
    ap.add_argument("--runs", nargs=2, type=Path, metavar=("FIRST.csv", "SECOND.csv"),
                    help="compare two runs already made back to back instead of making them")
    args = ap.parse_args()
    if args.runs:
        first, second = args.runs
    else:
        out = Path(args.out or tempfile.mkdtemp(prefix="infer-opt-b2b-"))
        first = run(args.suite, out / "first")
        spinners = [mp.Process(target=spin, daemon=True) for _ in range(args.load)]
        for s in spinners:
            s.start()
        try:
            second = run(args.suite, out / "second")
        finally:
            for s in spinners:
                s.kill()
    ref = ["--reference-variant", args.reference_variant] if args.reference_variant else []
    code = compare(first, second, *ref)
    compare(first, second, "--absolute", *ref)
    from infer_opt.core.stats import percentile
    from infer_opt.format.io import read_results

    a, b = read_results(first), read_results(second)
    old = {(r["variant"], r["cell_index"]): r for r in a.rows if r["status"] == "ok"}
    by_workload: dict[str, list[float]] = {}
    for r in b.rows:
        o = old.get((r["variant"], r["cell_index"]))
        if o and r["status"] == "ok" and o.get("tpot_ms_p50") and r.get("tpot_ms_p50"):
            change = 100 * (float(r["tpot_ms_p50"]) / float(o["tpot_ms_p50"]) - 1)
            by_workload.setdefault(r.get("workload") or "static-batch", []).append(change)
    for workload, changes in sorted(by_workload.items()):
        print(f"TPOT p50 change, {workload} rows ({len(changes)}): median |change| "
              f"{statistics.median(abs(c) for c in changes):.1f}%, worst "
              f"{max(changes, key=abs):+.1f}%, median {percentile(sorted(changes), 50):+.1f}%")
    return code


if __name__ == "__main__":
    sys.exit(main())
