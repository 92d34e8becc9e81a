"""test/bench/clients_noop.py KIND RUN CONCURRENCY BATCH -- the python client
(asyncio) working no-op stages of kind KIND until run RUN is over
(test/bench/clients.sh)."""
import asyncio
import os
import sys

from parflow import AsyncOperator, AsyncWorker


async def main(kind: str, run: int, concurrency: int, batch: int) -> int:
    async def noop(task, ctx):
        return {}
    worker = AsyncWorker(concurrency=concurrency, batch=batch, worker=f"bench-python-{os.getpid()}").handle(kind, noop)
    async with AsyncOperator() as op, worker:
        outcome = await op.run(run).wait(timeout=600)
    return 0 if outcome["state"] == "succeeded" else 1


sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
