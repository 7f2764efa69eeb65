"""Batching policies, one per module, registered under the entry-point group
`infer_opt.policies`. Each is `serve(engine, requests, clock, opts, prefix) -> ServerCounters`: it serves
every request to completion through the decode loop (engines/decode.py), stamping tokens as
they are ready."""
