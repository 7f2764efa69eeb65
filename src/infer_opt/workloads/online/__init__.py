"""Online serving workloads: requests arriving over time, served by a batching policy.

`workload.OnlineWorkload` (kind `online`) describes the load; `policies/` holds one batching
policy per module (sequential, dynamic, continuous) running on the torch backend's model;
`measure.py` serves the load and fills the row; `sweep.py` searches the highest arrival rate
that meets the SLO; `plot.py` draws latency against throughput; `table.py` renders the
online section of the results table.
"""
