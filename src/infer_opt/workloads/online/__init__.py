"""Online serving workloads: requests arriving over time, served by a batching policy.

`workload.OnlineWorkload` (kind `online`) describes the load; `policies/` holds one batching
policy per module (sequential, dynamic, continuous, registered under `infer_opt.policies`),
each driving the one decode loop (engines/decode.py) of any engine with row operations;
`measure.py` serves the load and fills the row; `sweep.py` searches the highest arrival rate
that meets the SLO. The online table section and plot live in results/serving_table.py and
results/serving_plot.py.
"""
