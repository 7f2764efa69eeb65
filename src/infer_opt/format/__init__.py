"""The results format: what the measuring side (run/) writes and the analysing side (results/)
reads, as its own layer under both. columns.py: the columns of a results CSV and the one table
of what each means (unit, better direction, timed, gated, floor, shown); io.py: the writer and
the one checked reader of a results file (CSV + samples); samples.py: which raw values stand
behind a metric column. It imports only infer_opt.core."""
