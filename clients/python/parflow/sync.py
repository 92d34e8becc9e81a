"""The synchronous client: Worker, Operator and Run, the asyncio ones run on
an event loop in a thread of their own. A Worker's handlers are plain
functions, run in threads; they see ctx.stopped (a threading.Event) set on
interrupt, cancel, a lost lease or shutdown, and ctx.heartbeat() blocks."""
from __future__ import annotations

import asyncio
import signal as _signal
import threading
from datetime import datetime
from typing import Any, Callable, Coroutine, Dict, List, Mapping, Optional, Sequence, TypeVar, Union

from .aio import AsyncOperator, AsyncRun, AsyncWorker, Context, Task
from .errors import ArgumentError

T = TypeVar("T")


class _Loop:
    """An event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="parflow-loop", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SyncContext:
    """What a sync handler gets beside its task."""

    def __init__(self, ctx: Context, loop: _Loop) -> None:
        self._ctx = ctx
        self._loop = loop
        self.worker_name = ctx.worker_name
        self.stopped = ctx.stopped

    @property
    def stop_reason(self) -> Optional[str]:
        return self._ctx.stop_reason

    def heartbeat(self) -> datetime:
        return self._loop.call(self._ctx.heartbeat())


SyncHandler = Callable[[Task, SyncContext], Optional[Mapping[str, Any]]]


class Worker:
    """Handlers (plain functions) per agent kind; see parflow.aio.AsyncWorker."""

    def __init__(self, connection: Optional[str] = None, **options: Any) -> None:
        self._worker = AsyncWorker(connection, **options)
        self._loop: Optional[_Loop] = None

    @property
    def name(self) -> str:
        return self._worker.name

    @property
    def stats(self) -> Dict[str, int]:
        return self._worker.stats

    @property
    def holding(self) -> int:
        return self._worker.holding

    def handle(self, kind: str, handler: SyncHandler, *, concurrency: Optional[int] = None) -> "Worker":
        if not callable(handler):
            self._worker.handle(kind, handler, concurrency=concurrency)   # raises the argument error
        loop_of = self

        def run(task: Task, ctx: Context) -> Any:
            return handler(task, SyncContext(ctx, loop_of._loop))  # type: ignore[arg-type]

        self._worker.handle(kind, run, concurrency=concurrency, sync=True)
        return self

    def start(self) -> "Worker":
        if self._loop is not None:
            raise ArgumentError("the worker is already started")
        self._loop = _Loop()

        async def go() -> None:
            await self._worker.start()
        try:
            self._loop.call(go())
        except BaseException:
            self._loop.close()
            self._loop = None
            raise
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        if self._loop is None:
            return
        self._loop.call(self._worker.stop(timeout))
        self._loop.close()
        self._loop = None

    def run(self) -> None:
        """start(), serve until SIGTERM or SIGINT, then stop() (from the main thread)."""
        done = threading.Event()
        old = {s: _signal.signal(s, lambda *_: done.set()) for s in (_signal.SIGTERM, _signal.SIGINT)}
        try:
            self.start()
            while not done.wait(0.5):
                pass
        finally:
            for s, h in old.items():
                _signal.signal(s, h)
            self.stop()

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Operator:
    """Define workflows, start runs, wait for them; see parflow.aio.AsyncOperator."""

    def __init__(self, connection: Optional[str] = None) -> None:
        self._op = AsyncOperator(connection)
        self._loop = _Loop()

    def query(self, query: str, params: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        return self._loop.call(self._op.query(query, params))

    def define(self, name: str, spec: Mapping[str, Any]) -> int:
        return self._loop.call(self._op.define(name, spec))

    def start(self, workflow: str, **options: Any) -> "Run":
        return Run(self, self._loop.call(self._op.start(workflow, **options)))

    def run(self, run_id: int) -> "Run":
        return Run(self, self._op.run(run_id))

    def estimate(self, workflow: str, flags: Sequence[str] = ()) -> Dict[str, Any]:
        return self._loop.call(self._op.estimate(workflow, flags))

    def close(self) -> None:
        self._loop.call(self._op.close())
        self._loop.close()

    def __enter__(self) -> "Operator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Run:
    """A run: wait for it, read its results, control it; see parflow.aio.AsyncRun."""

    def __init__(self, operator: Operator, run: AsyncRun) -> None:
        self._operator = operator
        self._run = run
        self.id = run.id

    def __repr__(self) -> str:
        return f"<parflow run {self.id}>"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._operator._loop.call(coro)

    def wait(self, timeout: Optional[float] = None, through_blocked: bool = False) -> Dict[str, Any]:
        return self._call(self._run.wait(timeout, through_blocked))

    def state(self) -> str:
        return self._call(self._run.state())

    def result(self) -> Dict[str, Any]:
        return self._call(self._run.result())

    def failures(self) -> List[Dict[str, Any]]:
        return self._call(self._run.failures())

    def report(self) -> Dict[str, Any]:
        return self._call(self._run.report())

    def cancel(self) -> None:
        self._call(self._run.cancel())

    def pause(self) -> None:
        self._call(self._run.pause())

    def resume(self) -> None:
        self._call(self._run.resume())

    def retry(self, stage: str) -> None:
        self._call(self._run.retry(stage))

    def restart_group(self, group: str) -> None:
        self._call(self._run.restart_group(group))

    def signal(self, event: str, payload: Optional[Mapping[str, Any]] = None) -> int:
        return self._call(self._run.signal(event, payload))

    def reject(self, event: str, reason: str) -> int:
        return self._call(self._run.reject(event, reason))
