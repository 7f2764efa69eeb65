"""The table's speedup: per-round paired ratios to the reference, with an interval."""

from __future__ import annotations

from infer_opt.results.reference import paired_speedup


def _samples(decode: list[float], rounds: list[int]) -> dict[str, object]:
    return {"runs": {"round": rounds, "decode_tokens_per_s": decode}}


def test_median_of_per_round_ratios() -> None:
    row, ref = {"cell_index": "1", "group": "g"}, {"cell_index": "0", "group": "g"}
    # per-round ratios 20/10 = 2, 30/10 = 3, 40/20 = 2 (round 3 has no partner): median 2
    samples = {"0": _samples([10, 10, 20], [0, 1, 2]),
               "1": _samples([40, 20, 30, 99], [2, 0, 1, 3])}
    mid, lo, hi = paired_speedup(row, ref, samples)  # type: ignore[misc]
    assert mid == 2.0
    assert lo is not None and hi is not None and 2.0 <= lo <= hi <= 3.0


def test_no_pairing_without_shared_rounds_or_samples() -> None:
    row, ref = {"cell_index": "1", "group": "g"}, {"cell_index": "0", "group": "g"}
    assert paired_speedup(row, ref, {"0": _samples([1.0], [0]), "1": _samples([2.0], [1])}) is None
    assert paired_speedup(row, ref, {"0": _samples([1.0], [0])}) is None
    assert paired_speedup(row, ref, {}) is None
    bad = {"0": _samples([1.0, 2.0], [0, 0]), "1": _samples([2.0], [0])}  # round twice
    assert paired_speedup(row, ref, bad) is None


def test_rows_of_different_jobs_do_not_pair() -> None:
    # round indices restart in every job (a group, or a chunk of its variants)
    row, ref = {"cell_index": "1", "group": "g"}, {"cell_index": "0", "group": "g"}
    samples = {"0": {**_samples([10, 10], [0, 1]), "job": 0},
               "1": {**_samples([20, 30], [0, 1]), "job": 1}}
    assert paired_speedup(row, ref, samples) is None
    samples["1"]["job"] = 0
    assert paired_speedup(row, ref, samples) is not None
    assert paired_speedup({**row, "group": "other"}, ref, samples) is None
