"""The serving-tax section (results/served_table.py) on hand-made rows and samples."""

from __future__ import annotations

from infer_opt.results.served_table import render_served, served_ratio, twin_variant


def test_twin_variants() -> None:
    assert twin_variant("served[server=own,policy=continuous]+kv-cache+sdpa") == "kv-cache+sdpa"
    assert twin_variant("kv-cache+served[policy=dynamic]") == "kv-cache"
    assert twin_variant("served") == "baseline"
    assert twin_variant("served[server=llamacpp]") == "llamacpp"
    assert twin_variant("served[server=vllm]") == "vllm"
    assert twin_variant("served[server=endpoint,endpoint=http://127.0.0.1:1/v1]") is None
    assert twin_variant("kv-cache+sdpa") is None


def _static(rounds: list[int], tpot: list[float]) -> dict:
    return {"runs": {"round": rounds, "tpot_ms": tpot, "ttft_ms": [10.0] * len(rounds),
                     "decode_tokens_per_s": [1000.0 / t for t in tpot]}}


def test_ratios_are_paired_by_round() -> None:
    twin = _static([0, 1, 2, 3], [10.0, 20.0, 10.0, 20.0])
    served = _static([0, 1, 2, 3], [11.0, 22.0, 11.0, 22.0])  # 10% tax in every round
    point, lo, hi = served_ratio("tpot_ms_p50", served, twin)
    assert abs(point - 1.1) < 1e-12 and abs(lo - 1.1) < 1e-12 and abs(hi - 1.1) < 1e-12
    thr = served_ratio("decode_tokens_per_s", served, twin)
    assert abs(thr[0] - 1 / 1.1) < 1e-12
    assert served_ratio("tpot_ms_p50", _static([0], [11.0]), _static([0], [10.0])) is None


def test_online_rounds_take_the_statistic_over_their_requests() -> None:
    def online(values: dict[int, list[float]]) -> dict:
        return {"requests": [{"round": r, "tpot_ms": v, "ttft_ms": 1.0}
                             for r, vs in values.items() for v in vs]}

    twin = online({0: [1.0, 2.0, 3.0], 1: [2.0, 4.0, 6.0]})  # medians 2, 4
    served = online({0: [3.0, 3.0, 3.0], 1: [5.0, 6.0, 7.0]})  # medians 3, 6
    point, _, _ = served_ratio("tpot_ms_p50", served, twin)
    assert abs(point - 1.5) < 1e-12


def test_section_pairs_a_served_row_with_its_ok_twin_of_the_same_workload() -> None:
    base = {"status": "ok", "model": "m", "group": "g", "workload": "static-batch",
            "batch_size": "1", "prompt_tokens": "8", "new_tokens": "8"}
    rows = [{**base, "variant": "kv-cache", "cell_index": "0"},
            {**base, "variant": "served[server=own]+kv-cache", "cell_index": "1", "errors": "0"},
            {**base, "variant": "served[server=own]+sdpa", "cell_index": "2"}]  # no twin
    samples = {"0": _static([0, 1], [10.0, 10.0]), "1": _static([0, 1], [12.0, 12.0])}
    text = render_served(rows, samples)
    assert "| served[server=own]+kv-cache | kv-cache | static-batch | 1 |" in text
    assert "1.20 [1.20, 1.20]" in text and "+sdpa" not in text
    assert render_served(rows[:1], samples) == ""
