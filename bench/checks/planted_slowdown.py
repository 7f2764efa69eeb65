"""Can `compare` see a real 10% slowdown, and does it stay quiet when nothing changed?

Runs the same small interleaved suite REPS times on the default model. Each run holds three
variants measured side by side in rounds: `kv-cache`, `kv-cache+test-slow[pct=10]` (every
forward step +10% of its own time, busy-waited) and `kv-cache+test-slow[pct=0]` (the same
wrapper, no delay: an unchanged twin). In each run, `compare --map` pairs both against
`kv-cache` round by round; a variant is flagged when the 95% interval of its paired median
TPOT change excludes zero (threshold 0%, multiple testing corrected as compare does).

Expected (issue "Numbers you can defend"): the slowed variant flagged in >= 9 of 10 runs, the
twin in none. How many rounds that takes depends on the machine: on this shared 2-core VM one
run's TPOT moves by ~9% (sd of the per-round ratio of two identical variants), the median of
per-round ratios has a standard error of about 1.25 * 9% / sqrt(rounds), and the interval
(97.5%: two tests) must clear zero even when the estimate falls low. 10 rounds flagged the +10%
variant in 6 of 10 runs; 20 rounds (the default) flagged it in 9 of 10 and the twin in none
(27 min 41 s for 10 runs).
Run alone on the machine, outside `make test` (about 30 minutes on 2 cores):

    PYTHONPATH=tests/fixture_plugins .venv/bin/python bench/checks/planted_slowdown.py --reps 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = """
name = "planted"
model = "{model}"
device = "cpu"
threads = 2
seed = {seed}
[[group]]
name = "planted"
variants = ["kv-cache", "kv-cache+test-slow[pct=10]", "kv-cache+test-slow[pct=0]"]
batch_sizes = [1]
prompt_tokens = 32
new_tokens = 32
min_repeats = {repeats}
max_repeats = {repeats}
warmup_runs = 1
warmup_new_tokens = 4
"""
SLOW, TWIN = "kv-cache+test-slow[pct=10]", "kv-cache+test-slow[pct=0]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20, help="timed runs (rounds) per variant per run")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=None, help="where the runs go (default: a temp dir)")
    args = ap.parse_args()
    from infer_opt.format.io import read_results
    from infer_opt.results.compare import compare

    out = Path(args.out or tempfile.mkdtemp(prefix="infer-opt-planted-"))
    out.mkdir(parents=True, exist_ok=True)
    fixture = Path(__file__).resolve().parents[2] / "tests" / "fixture_plugins"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(fixture), *filter(None, [os.environ.get("PYTHONPATH")])]))
    flagged = {SLOW: 0, TWIN: 0}
    for rep in range(args.reps):
        suite = out / f"planted-{rep}.toml"
        suite.write_text(SUITE.format(model=args.model, seed=rep, repeats=args.repeats))
        runs = out / f"rep{rep}"
        subprocess.run([sys.executable, "-m", "infer_opt.cli", "run", "--suite", str(suite),
                        "--out", str(runs)], env=env, check=True, stdout=subprocess.DEVNULL)
        run = read_results(next(runs.glob("*.csv")))
        cmp = compare(run, maps=[f"{SLOW}=kv-cache", f"{TWIN}=kv-cache"],
                      thresholds=["1000%", "tpot_ms_p50=0%"])
        line = []
        for r in cmp.rows:
            for m in r.metrics:
                if m.metric != "tpot_ms_p50" or m.ci is None:
                    continue
                variant = SLOW if "pct=10" in r.label else TWIN
                hit = m.ci[0] > 1.0 or m.ci[1] < 1.0  # the interval excludes "no change"
                flagged[variant] += hit
                line.append(f"{variant}: {100 * (m.ratio - 1):+.1f}% "
                            f"[{100 * (m.ci[0] - 1):+.1f}..{100 * (m.ci[1] - 1):+.1f}%] "
                            f"{'FLAGGED' if hit else 'not flagged'}")
        print(f"run {rep}: " + "; ".join(line), flush=True)
    print(f"slowed +10% flagged in {flagged[SLOW]} of {args.reps} runs (want >= "
          f"{args.reps - 1}); unchanged twin flagged in {flagged[TWIN]} (want 0)")
    return 0 if flagged[SLOW] >= args.reps - 1 and flagged[TWIN] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
