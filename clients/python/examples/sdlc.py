"""The SDLC orchestrator on the parflow client (asyncio): its ten agents as
handlers of one AsyncWorker, its workflow as a spec, one parallel and one
sequential run, and the savings the parallel one realised.

    python3 examples/sdlc.py [conninfo]      (default: the PG* variables)

The agents simulate their work: each sleeps its stage's estimate, one
estimated minute lasting PF_DEMO_MS_PER_MIN ms (default 10), and passes on
what the stages before it produced. Run by `make demo-python`.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from parflow import AsyncOperator, AsyncWorker, Context, Task

#: The workflow: eleven stages of ten agent kinds in eight groups, at most four at once.
SDLC_SPEC: Dict[str, Any] = {
    "max_parallel": 4,
    "description": "Software delivery: research to documentation",
    "groups": [
        {"name": "research", "stages": [{"name": "research", "agent": "research", "estimate": "45 min"}]},
        {"name": "critique", "stages": [{"name": "critique", "agent": "critique", "estimate": "30 min"}]},
        {"name": "build", "stages": [
            {"name": "backend", "agent": "backend", "estimate": "60 min"},
            {"name": "frontend", "agent": "frontend", "estimate": "60 min"}]},
        {"name": "qa", "stages": [
            {"name": "backend_qa", "agent": "qa", "estimate": "45 min"},
            {"name": "frontend_qa", "agent": "qa", "estimate": "45 min"}]},
        {"name": "hardening", "stages": [
            {"name": "performance", "agent": "performance", "estimate": "60 min", "when": "performance"},
            {"name": "security", "agent": "security", "estimate": "60 min", "when": "security"}]},
        {"name": "statistics", "stages": [{"name": "statistics", "agent": "statistics", "estimate": "90 min"}]},
        {"name": "devops", "stages": [{"name": "devops", "agent": "devops", "estimate": "15 min"}]},
        {"name": "docs", "stages": [{"name": "documentation", "agent": "documentation", "estimate": "30 min"}]},
    ],
}

Make = Callable[[Task, Dict[str, Dict[str, Any]]], Dict[str, Any]]


def sdlc_handlers(ms_per_minute: float) -> Dict[str, Callable[[Task, Context], Any]]:
    """The ten agents: what each one produces from what it was given."""

    def agent(make: Make) -> Callable[[Task, Context], Any]:
        async def handler(task: Task, ctx: Context) -> Dict[str, Any]:
            await asyncio.sleep((task.estimate_seconds or 0) / 60 * ms_per_minute / 1000)
            return {"stage": task.stage, **make(task, task.input.get("upstream", {}))}
        return handler

    return {
        "research": agent(lambda t, up: {"requirement": t.input.get("requirement", "export invoices as CSV"),
                                         "findings": ["users want CSV", "UTF-8 with BOM"]}),
        "critique": agent(lambda t, up: {"accepted": len(up.get("research", {}).get("findings", [])), "risks": ["large exports"]}),
        "backend": agent(lambda t, up: {"api": "GET /invoices.csv", "streaming": True}),
        "frontend": agent(lambda t, up: {"ui": "export button"}),
        "qa": agent(lambda t, up: {"checked": sorted(up), "passed": True, "suite": t.stage}),
        "performance": agent(lambda t, up: {"p95_ms": 180}),
        "security": agent(lambda t, up: {"findings": 0}),
        "statistics": agent(lambda t, up: {"inputs": sorted(up)}),
        "devops": agent(lambda t, up: {"deployed": "staging"}),
        "documentation": agent(lambda t, up: {"pages": 3, "from": sorted(up)}),
    }


async def run_sdlc(connection: Optional[str] = None, name: str = "sdlc", flags: Optional[List[str]] = None,
                   ms_per_minute: float = 10, say: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Define the workflow as `name`, run it in parallel and sequentially, measure the savings."""
    flags = ["performance", "security"] if flags is None else flags
    kind = (lambda k: k) if name == "sdlc" else (lambda k: f"{name}_{k}")
    spec = dict(SDLC_SPEC, groups=[dict(g, stages=[dict(s, agent=kind(s["agent"])) for s in g["stages"]])
                                   for g in SDLC_SPEC["groups"]])
    worker = AsyncWorker(connection, concurrency=4, lease="1 min", worker=f"{name}-python")
    for k, h in sdlc_handlers(ms_per_minute).items():
        worker.handle(kind(k), h, concurrency=2)
    async with AsyncOperator(connection) as op, worker:
        version = await op.define(name, spec)
        est = await op.estimate(name, flags)
        say(f"== {name} version {version}: 11 stages, flags {{{','.join(flags)}}}")
        say(f"   planned: one at a time {est['sequential']}, in parallel {est['parallel']} ({est['savings_pct']} % less)")

        async def timed(parallel: bool) -> Dict[str, Any]:
            t0 = time.monotonic()
            run = await op.start(name, flags=flags, parallel=parallel, input={"requirement": "export invoices as CSV"})
            outcome = await run.wait(timeout=600)
            took = time.monotonic() - t0
            if outcome["state"] != "succeeded":
                raise RuntimeError(f"run {run.id} ended {outcome['state']}: {outcome['failures']}")
            say(f"   run {run.id} ({'parallel' if parallel else 'sequential'}): succeeded in {took * 1000:.0f} ms"
                f" = {took * 1000 / ms_per_minute / 60:.2f} estimated h")
            return {"run": run, "took": took}

        par = await timed(True)
        seq = await timed(False)
        result = await par["run"].result()
        say(f"   documentation of run {par['run'].id} was written from: {result['outputs']['documentation']['from']}")
        realised = round(100 * (1 - par["took"] / seq["took"]), 1)
        say(f"== realised savings: {realised} % (estimated {est['savings_pct']} %)")
        return {"parallel_run": par["run"].id, "sequential_run": seq["run"].id, "estimated_savings_pct": est["savings_pct"],
                "realised_savings_pct": realised}


if __name__ == "__main__":
    ms = float(os.environ.get("PF_DEMO_MS_PER_MIN", "10"))
    asyncio.run(run_sdlc(sys.argv[1] if len(sys.argv) > 1 else None, ms_per_minute=ms, say=print))
