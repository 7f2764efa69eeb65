"""The own server's event-loop CPU per streamed token (docs/serving.md, "What the server adds").

    LOOP=uvloop HTTP=httptools TOK=1 .venv/bin/python bench/checks/server_cpu.py
    LOOP=asyncio HTTP=h11 TOK=1 .venv/bin/python bench/checks/server_cpu.py

A fake decode loop (one token every 4 ms, no torch) behind the own server's app
(workloads/online/http_app.build_app), uvicorn in a thread, one streamed request of 500
tokens; prints the CPU time of the server's thread (from /proc, clock ticks: about +-20 us per
token at 500 tokens) and of the client's, per token. TOK=1 uses the default model's tokenizer
(real text deltas); without it a token's text is "<id>". Run alone on the machine.
"""
import asyncio, os, sys, threading, time
import uvicorn
from infer_opt.workloads.online.http_app import PolicyOptions, build_app
from infer_opt.engines.http.client import Job, run_jobs, new_client
from infer_opt.engines.http.launch import free_port
from infer_opt.core.models import load_tokenizer, resolve

class FakeEngine:
    def context(self):
        import contextlib; return contextlib.nullcontext()

def policy(engine, source, clock, opts, prefix):
    while source.open:
        for r in source.due(clock.now()):
            for i in range(r.new_tokens):
                time.sleep(0.004)
                r.add(1000 + i % 50, clock.now())
        source.wait(clock)

tok = load_tokenizer(resolve("smollm2-135m")) if os.environ.get("TOK") else None
app = build_app(FakeEngine(), tok, policy, PolicyOptions(1, 0), "m", 8192)
port = free_port()
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                       loop=os.environ.get("LOOP", "auto"), http=os.environ.get("HTTP", "auto")))
th = threading.Thread(target=server.run, daemon=True); th.start()
while not server.started: time.sleep(0.05)
def cpu(tid):
    f = open(f"/proc/self/task/{tid}/stat").read(); f = f[f.rindex(")")+2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
N = 500
async def go():
    async with new_client() as c:
        await run_jobs(f"http://127.0.0.1:{port}/v1", [Job(0, [1,2,3], 10)], "m", client=c)
        a = cpu(th.native_id); t = time.thread_time()
        out = await run_jobs(f"http://127.0.0.1:{port}/v1", [Job(0, [1,2,3], N)], "m", client=c)
        b = cpu(th.native_id); u = time.thread_time()
        print(f"server loop thread {(b-a)/N*1e6:.0f} us/token; client thread {(u-t)/N*1e6:.0f} us/token; tokens {out[0].tokens}")
asyncio.run(go())
server.should_exit = True; th.join(5)
