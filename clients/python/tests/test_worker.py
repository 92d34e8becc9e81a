"""The workers and the operator against the throwaway cluster: the SDLC
workflow end to end, failures, a P0 run preempting, cancel, a backend
terminated during work, the shutdown drain, the sync API."""
import asyncio
import sys
import threading
import time
from pathlib import Path

from conftest import one_group
from parflow import AsyncOperator, AsyncWorker, NonRetryableError, Operator, Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from sdlc import run_sdlc  # noqa: E402


def events(sql, run):
    return [r[0] for r in sql("SELECT kind FROM parflow.events WHERE run = %s ORDER BY event", (run,))]


def test_sdlc_end_to_end(sql):
    r = asyncio.run(run_sdlc(name="py_w_sdlc", ms_per_minute=4))
    assert r["estimated_savings_pct"] == 30.6
    assert r["realised_savings_pct"] > 10
    res = sql("SELECT parflow_result(%s)", (r["parallel_run"],))[0][0]
    assert res["state"] == "succeeded" and len(res["outputs"]) == 11
    assert res["outputs"]["critique"]["accepted"] == 2


def test_failures_retries_and_nonretryable(sql):
    async def main():
        flaky = {"n": 0}

        async def handler(task, ctx):
            if task.stage == "first":
                return {"n": 41}
            if task.stage == "flaky":
                flaky["n"] += 1
                if flaky["n"] == 1:
                    raise RuntimeError("first try fails")
            if task.stage == "doomed":
                raise NonRetryableError("cannot ever work", output={"reason": "no"})
            if task.stage == "badout":
                return ["not", "a", "dict"]
            return {"got": task.input["upstream"]["first"]["n"] + 1}
        async with AsyncOperator() as op, AsyncWorker(concurrency=3, poll_interval=0.2).handle("py_w_flow", handler):
            await op.define("py_w_flow", {"groups": [
                {"name": "a", "stages": [{"name": "first", "agent": "py_w_flow", "estimate": "1 min"}]},
                {"name": "b", "stages": [
                    {"name": "flaky", "agent": "py_w_flow", "estimate": "1 min", "retry_backoff": "0 s"},
                    {"name": "doomed", "agent": "py_w_flow", "estimate": "1 min"},
                    {"name": "badout", "agent": "py_w_flow", "estimate": "1 min"}]}]})
            run = await op.start("py_w_flow", parallel=True)
            out = await run.wait(timeout=20)
            assert out["state"] == "blocked"
            by = {f["stage"]: f for f in out["failures"]}
            assert set(by) == {"doomed", "badout"}
            assert by["doomed"]["attempts"] == 1 and "NonRetryableError: cannot ever work" in by["doomed"]["last_error"]
            assert 'returned a list: the output must be a JSON object' in by["badout"]["last_error"]
            assert (await run.result())["outputs"]["flaky"] == {"got": 42}
            assert flaky["n"] == 2
    asyncio.run(main())


def test_p0_preempts(sql):
    cap = int(sql("SELECT current_setting('parflow.max_parallel_stages')")[0][0])

    async def main():
        reasons = []
        p0_done = asyncio.Event()

        async def low(task, ctx):
            try:
                await asyncio.wait_for(p0_done.wait(), 60)
            except asyncio.CancelledError:
                reasons.append(ctx.stop_reason)
                raise
            return {}

        async def hot(task, ctx):
            asyncio.get_running_loop().call_later(0.1, p0_done.set)
            return {"hotfix": True}
        w = AsyncWorker(concurrency=cap + 1, poll_interval=0.2).handle("py_w_low", low).handle("py_w_p0", hot)
        async with AsyncOperator() as op, w:
            await op.define("py_w_low", one_group("py_w_low", cap, retry_backoff="0 s"))
            await op.define("py_w_p0", one_group("py_w_p0", 1))
            lowrun = await op.start("py_w_low", priority=2, parallel=True)
            for _ in range(400):
                if sql("SELECT count(*) FROM parflow.tasks WHERE run = %s AND state = 'running'", (lowrun.id,))[0][0] == cap:
                    break
                await asyncio.sleep(0.05)
            p0 = await op.start("py_w_p0", priority=0)
            assert (await p0.wait(timeout=20))["state"] == "succeeded"
            assert reasons == ["interrupt"]
            assert (await lowrun.wait(timeout=30))["state"] == "succeeded"
            ev = events(sql, lowrun.id)
            assert ev.count("interrupt") == 1 and ev.count("released") == 1
            assert "retry" not in ev and "failed" not in ev
    asyncio.run(main())


def test_cancel(sql):
    async def main():
        reason = []
        started = asyncio.Event()

        async def handler(task, ctx):
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                reason.append(ctx.stop_reason)
                raise
        w = AsyncWorker(poll_interval=0.2).handle("py_w_cancel", handler)
        async with AsyncOperator() as op, w:
            await op.define("py_w_cancel", one_group("py_w_cancel", 1))
            run = await op.start("py_w_cancel")
            waiting = asyncio.create_task(run.wait(timeout=20))
            await started.wait()
            await run.cancel()
            assert (await waiting)["state"] == "cancelled"
            for _ in range(100):
                if w.holding == 0:
                    break
                await asyncio.sleep(0.02)
            assert reason == ["cancel"] and w.holding == 0
    asyncio.run(main())


def test_lost_connection_during_work(sql):
    async def main():
        gate = asyncio.Event()

        async def handler(task, ctx):
            if task.stage == "s1":
                await gate.wait()
            return {"stage": task.stage}
        w = AsyncWorker("application_name=py-w-lost", concurrency=2, poll_interval=0.2).handle("py_w_lost", handler)
        async with AsyncOperator("application_name=py-w-waiter") as op, w:
            await op.define("py_w_lost", {"groups": [{"name": "g", "stages": [{"name": "s1", "agent": "py_w_lost", "estimate": "1 min"}]},
                                                     {"name": "h", "stages": [{"name": "s2", "agent": "py_w_lost", "estimate": "1 min"}]}]})
            run = await op.start("py_w_lost")
            waiting = asyncio.create_task(run.wait(timeout=30))
            for _ in range(400):
                if sql("SELECT count(*) FROM parflow.tasks WHERE run = %s AND state = 'running'", (run.id,))[0][0] == 1:
                    break
                await asyncio.sleep(0.05)
            killed = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE application_name IN ('py-w-lost', 'py-w-waiter')")[0][0]
            assert killed >= 3          # the worker's two connections and the operator's listener
            gate.set()                  # the work ends while the connections are down
            assert (await waiting)["state"] == "succeeded"
            assert w.stats["reconnects"] >= 1
            assert (await run.result())["outputs"]["s1"] == {"stage": "s1"}
    asyncio.run(main())


def test_sync_worker_drain(sql):
    """Sync handlers in threads: stop() lets one finish, stops the other (ctx.stopped) and releases its task."""
    seen = []

    def handler(task, ctx):
        if task.stage == "quick":
            time.sleep(0.1)
            return {"stage": task.stage}
        ctx.stopped.wait(60)
        seen.append(ctx.stop_reason)
        raise RuntimeError("stopped")
    with Operator() as op:
        op.define("py_w_drain", one_group("py_w_drain", ["quick", "slow"]))
        w = Worker(concurrency=2, drain_timeout=0.3, poll_interval=0.2).handle("py_w_drain", handler).start()
        run = op.start("py_w_drain", parallel=True)
        sql.until("SELECT count(*) = 2 FROM parflow.tasks WHERE run = %s AND state = 'running'", (run.id,))
        w.stop()
        assert seen == ["shutdown"]
        states = dict(sql("SELECT stage, state FROM parflow.tasks WHERE run = %s", (run.id,)))
        assert states["quick"] == "succeeded" and states["slow"] in ("ready", "dispatched")
        assert "released" in events(sql, run.id)
        with Worker(poll_interval=0.2).handle("py_w_drain", lambda t, c: {"ok": True}):
            assert run.wait(timeout=20)["state"] == "succeeded"


def test_batch(sql):
    async def main():
        async def handler(task, ctx):
            return {"i": task.stage}
        w = AsyncWorker(concurrency=8, batch=8, poll_interval=0.2).handle("py_w_batch", handler)
        async with AsyncOperator() as op, w:
            await op.define("py_w_batch", one_group("py_w_batch", 200))
            run = await op.start("py_w_batch", parallel=True)
            assert (await run.wait(timeout=60))["state"] == "succeeded"
            # the run's announcement may come before the answer to the last completion
            for _ in range(100):
                if w.stats["completed"] == 200:
                    break
                await asyncio.sleep(0.02)
            assert w.stats["completed"] == 200
    asyncio.run(main())


def test_map_approval_and_sub_workflow(sql):
    async def main():
        async def handler(task, ctx):
            if task.stage == "research":
                return {"items": [1, 2, 3]}
            if task.stage == "impl":
                assert task.item == task.input["index"]
                return {"sq": task.input["item"] ** 2}
            if task.stage == "check":
                return {"checked": task.input["upstream"]["approve"]}
            return {"sum": sum(x["sq"] for x in task.input["upstream"]["impl"])}
        async with AsyncOperator() as op, AsyncWorker(concurrency=4, poll_interval=0.2).handle("py_w_shapes", handler):
            await op.define("py_w_shapes_qa", {"groups": [{"name": "q", "stages": [
                {"name": "check", "agent": "py_w_shapes", "estimate": "1 min"}]}]})
            await op.define("py_w_shapes", {"groups": [
                {"name": "a", "stages": [{"name": "research", "agent": "py_w_shapes", "estimate": "1 min"}]},
                {"name": "b", "stages": [{"name": "impl", "agent": "py_w_shapes", "estimate": "1 min",
                                          "map": {"over": "research", "key": "items", "max": 10}}]},
                {"name": "c", "stages": [{"name": "approve", "wait": {"event": "ok", "timeout": "1 hour"}}]},
                {"name": "d", "stages": [{"name": "qa", "workflow": "py_w_shapes_qa"},
                                         {"name": "done", "agent": "py_w_shapes", "estimate": "1 min", "depends_on": ["impl"]}]}]})
            run = await op.start("py_w_shapes", parallel=True)
            await asyncio.to_thread(sql.until, "SELECT state = 'awaiting' FROM parflow.tasks WHERE run = %s AND stage = 'approve'",
                                    (run.id,))
            assert await run.signal("ok", {"by": "python"}) == 1
            out = await run.wait(timeout=20)
            assert out["state"] == "succeeded"
            res = await run.result()
            assert res["outputs"]["impl"] == [{"sq": 1}, {"sq": 4}, {"sq": 9}]
            assert res["outputs"]["approve"] == {"by": "python"}
            assert res["outputs"]["qa"]["state"] == "succeeded"
            assert res["outputs"]["qa"]["outputs"]["check"] == {"checked": {"by": "python"}}
            assert res["outputs"]["done"] == {"sum": 14}
    asyncio.run(main())
