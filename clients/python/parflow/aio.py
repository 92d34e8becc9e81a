"""The asyncio client: AsyncWorker (handlers per agent kind) and
AsyncOperator (define, start, wait, results, control).

An AsyncWorker keeps two connections: one LISTENs on "parflow_<kind>" for
every kind it handles, the other carries every SQL call, one at a time, sent
by one loop (the pump) in this order: releases, reports (complete / fail),
heartbeats that are due (every lease/3), then a claim while capacity is free.
Claims ask for up to ``batch`` tasks (parflow_claim's max_tasks); successes
ready together go in one parflow_complete_many, a lone one with the next
claim of its kind in one parflow_complete_and_claim. ``interrupt`` stops a
handler (its asyncio task is cancelled; a sync handler sees ctx.stopped) and
its task is released; ``cancel`` stops it and the task is dropped. A lost
connection is reopened with backoff; reports finished meanwhile, or lost
with the connection, are sent after the reconnect. stop() drains: no more
claims, running handlers get ``drain_timeout`` seconds, then are stopped and
released. The model is the reference agent, src/agent/*.c.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Union

import psycopg
from psycopg import sql as psql
from psycopg.rows import dict_row

from ._util import check_kind, check_name, describe, positive_int, seconds
from .errors import ArgumentError, NonRetryableError, ParflowError, from_server, is_connection_error
from .validate import validate_spec

log = logging.getLogger("parflow")

MANY_MAX = 1000
MANY_MAX_BYTES = 8 * 1024 * 1024
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
RETRY_S = 1.0
FINAL = ("succeeded", "blocked", "cancelled")

CLAIM_COLS = """SELECT c.task, c.token::text AS token, c.run, c.stage, c.attempt, c.input,
  extract(epoch FROM c.estimate)::float8 AS estimate, c.lease_until, c.item"""


@dataclass
class Task:
    """A claimed task, as the handler sees it."""
    id: int
    token: str
    run: int
    stage: str
    kind: str
    attempt: int
    input: Dict[str, Any]
    estimate_seconds: Optional[float]
    lease_until: datetime
    item: Optional[int]


class Context:
    """What a handler gets beside its task."""

    def __init__(self, worker: "AsyncWorker", held: "_Held") -> None:
        self._worker = worker
        self._held = held
        self.worker_name = worker.name
        #: set when the task must stop (interrupt, cancel, lost lease, shutdown)
        self.stopped = threading.Event()
        #: why: "interrupt", "cancel", "lease-lost" or "shutdown"
        self.stop_reason: Optional[str] = None

    async def heartbeat(self) -> datetime:
        """Heartbeat now (they also run on their own every lease/3); the new lease end."""
        return await self._worker._heartbeat_now(self._held)


Output = Optional[Mapping[str, Any]]
Handler = Callable[[Task, Context], Any]


@dataclass
class _Kind:
    kind: str
    handler: Handler
    concurrency: int
    sync: bool
    want: bool = True
    again: bool = False     # a dispatch arrived while a claim of the kind was in flight


@dataclass
class _Held:
    task: Task
    state: str = "working"              # working | report | release
    after: Optional[str] = None         # release | drop, once stopped
    job: Optional[asyncio.Task] = None
    ctx: Optional[Context] = None
    next_heartbeat: float = 0.0
    heartbeat_waiters: List[asyncio.Future] = field(default_factory=list)
    report: Optional[Dict[str, Any]] = None
    resend: bool = False
    plain: bool = False
    retry_at: float = 0.0


def _error_text(err: BaseException) -> str:
    name = type(err).__name__
    msg = str(err)
    return f"{name}: {msg}" if name not in ("Exception",) else msg


def _transient(code: Optional[str]) -> bool:
    return bool(code) and (code.startswith("40") or code.startswith("53"))


def _sqlstate(err: BaseException) -> Optional[str]:
    if isinstance(err, ParflowError):
        return err.sqlstate
    if isinstance(err, psycopg.Error) and err.diag:
        return err.diag.sqlstate
    return None


class AsyncWorker:
    """Handlers per agent kind; see the module's documentation."""

    def __init__(self, connection: Optional[str] = None, *, worker: Optional[str] = None,
                 concurrency: int = 1, batch: Optional[int] = None,
                 lease: Union[float, str] = "5 min", poll_interval: float = 1.0,
                 complete_and_claim: bool = True, drain_timeout: float = 30.0) -> None:
        if connection is not None and not isinstance(connection, str):
            raise ArgumentError(f"connection must be a conninfo string, not {describe(connection)}")
        self.conninfo = connection or ""
        self.name = worker if worker is not None else f"{socket.gethostname()}-{os.getpid()}"
        check_name(self.name, "worker name")
        self.concurrency = positive_int(concurrency, "concurrency", 100000)
        self.batch = min(self.concurrency, MANY_MAX) if batch is None else positive_int(batch, "batch", MANY_MAX)
        self.lease_seconds = seconds(lease, "lease")
        self.poll_interval = seconds(poll_interval, "poll_interval")
        self.use_cac = bool(complete_and_claim)
        if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, (int, float)) or drain_timeout < 0:
            raise ArgumentError(f"drain_timeout must be a number of seconds >= 0 (found {drain_timeout!r})")
        self.drain_timeout = float(drain_timeout)
        self.stats = {"claimed": 0, "completed": 0, "failed": 0, "released": 0, "dropped": 0, "reconnects": 0}
        self._kinds: Dict[str, _Kind] = {}
        self._channels: Dict[str, str] = {}
        self._held: Dict[int, _Held] = {}
        self._conn: Optional[psycopg.AsyncConnection] = None
        self._started = False
        self._shutting_down = False
        self._closed = False
        self._wake = asyncio.Event()
        self._next_poll = 0.0
        self._backoff = BACKOFF_MIN
        self._claim_many = self._cac_ok = self._many_ok = True
        self._tasks: List[asyncio.Task] = []
        self._stopping: Optional[asyncio.Task] = None
        self._last_claim_error = ""

    # ---- the public side ----------------------------------------------------

    def handle(self, kind: str, handler: Handler, *, concurrency: Optional[int] = None, sync: Optional[bool] = None) -> "AsyncWorker":
        """Register the handler of an agent kind (before start). A coroutine
        function is awaited; a plain function runs in a thread (sync)."""
        check_kind(kind)
        if not callable(handler):
            raise ArgumentError(f'handler for agent kind "{kind}" must be callable, not {describe(handler)}')
        if kind in self._kinds:
            raise ArgumentError(f'agent kind "{kind}" already has a handler')
        if self._started:
            raise ArgumentError("handle() must be called before start()")
        conc = self.concurrency if concurrency is None else positive_int(concurrency, f'concurrency of "{kind}"', 100000)
        is_sync = (not asyncio.iscoroutinefunction(handler)) if sync is None else sync
        self._kinds[kind] = _Kind(kind, handler, conc, is_sync)
        self._channels[f"parflow_{kind}"] = kind
        return self

    async def start(self) -> "AsyncWorker":
        """Connect, LISTEN and start claiming; returns once both connections are up."""
        if self._started:
            raise ArgumentError("the worker is already started")
        if not self._kinds:
            raise ArgumentError("no handler: call handle(kind, handler) before start()")
        self._started = True
        self._wake = asyncio.Event()
        try:
            self._conn = await self._connect()
            listener = await self._listen_conn()
        except Exception as err:
            raise from_server(err) from None
        self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._listen(listener))]
        return self

    @property
    def holding(self) -> int:
        """Tasks held: working, or to be reported or released."""
        return len(self._held)

    async def stop(self, timeout: Optional[float] = None) -> None:
        """Drain and close (see the module's documentation)."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(self.drain_timeout if timeout is None else timeout))
        await asyncio.shield(self._stopping)

    async def run(self) -> None:
        """start(), then serve until SIGTERM or SIGINT, then stop()."""
        import signal
        await self.start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, done.set)
        try:
            await done.wait()
        finally:
            for s in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(s)
            await self.stop()

    async def __aenter__(self) -> "AsyncWorker":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ---- connections -------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, row_factory=dict_row,
                                                     connect_timeout=10, application_name="parflow-python-worker") \
            if "application_name" not in self.conninfo else \
            await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, row_factory=dict_row, connect_timeout=10)

    async def _listen_conn(self) -> psycopg.AsyncConnection:
        c = await self._connect()
        for ch in self._channels:
            await c.execute(psql.SQL("LISTEN {}").format(psql.Identifier(ch)))
        return c

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        backoff = BACKOFF_MIN
        while not self._closed:
            try:
                async for n in conn.notifies():
                    self._notified(n.channel, n.payload)
            except asyncio.CancelledError:
                await conn.close()
                raise
            except Exception as err:
                log.info("listener connection lost, reconnecting: %s", err)
            await conn.close()
            while not self._closed:
                await asyncio.sleep(backoff)
                try:
                    conn = await self._listen_conn()
                    backoff = BACKOFF_MIN
                    for k in self._kinds.values():
                        k.want = True
                    self._wake.set()
                    break
                except Exception:
                    backoff = min(backoff * 2, BACKOFF_MAX)

    def _lost(self, err: BaseException) -> None:
        c, self._conn = self._conn, None
        log.info("connection lost, reconnecting: %s", err)
        if c is not None:
            asyncio.create_task(c.close())

    async def _reconnect(self) -> None:
        await asyncio.sleep(self._backoff)
        try:
            self._conn = await self._connect()
        except Exception as err:
            log.debug("reconnect failed, next in %.1f s: %s", self._backoff, err)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            if self._shutting_down and not self._held:
                self._closed = True
            return
        self._backoff = BACKOFF_MIN
        self.stats["reconnects"] += 1
        for k in self._kinds.values():
            k.want = True
        for h in self._held.values():
            if h.state == "working":
                h.next_heartbeat = 0.0

    # ---- the pump ------------------------------------------------------------

    async def _pump(self) -> None:
        while not self._closed:
            if self._conn is None:
                await self._reconnect()
                continue
            did = False
            try:
                did = await self._step(self._conn)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if is_connection_error(err):
                    self._lost(err)
                else:
                    log.error("unexpected: %s", _error_text(err))
            if not did and not self._closed and self._conn is not None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), max(0.0, self._deadline() - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _wakeup(self) -> None:
        self._wake.set()

    def _deadline(self) -> float:
        now = time.monotonic()
        d = now + 3600
        for h in self._held.values():
            if h.state != "working":
                d = min(d, h.retry_at)
            elif h.heartbeat_waiters:
                d = now
            elif not self._shutting_down:
                d = min(d, h.next_heartbeat)
        if not self._shutting_down and self._free() > 0:
            for k in self._kinds.values():
                if k.want and self._free_for(k) > 0:
                    return now
            d = min(d, self._next_poll)
        return d

    def _free(self) -> int:
        return self.concurrency - len(self._held)

    def _free_for(self, k: _Kind, besides: int = 0) -> int:
        n = sum(1 for h in self._held.values() if h.task.kind == k.kind)
        return min(self._free() + besides, k.concurrency - n + besides)

    def _lease_text(self) -> str:
        return f"{self.lease_seconds} seconds"

    async def _step(self, c: psycopg.AsyncConnection) -> bool:
        now = time.monotonic()
        for h in list(self._held.values()):
            if h.state == "release" and h.retry_at <= now:
                await self._release(c, h)
                return True
        ok: List[_Held] = []
        for h in list(self._held.values()):
            if h.state != "report" or h.retry_at > now:
                continue
            if h.report["kind"] == "fail":
                await self._fail(c, h)
                return True
            ok.append(h)
        if len(ok) > 1 and self._many_ok:
            batch: List[_Held] = []
            size = 0
            for h in ok:
                if h.plain:
                    continue
                n = len(h.report["output"])
                if len(batch) >= MANY_MAX or (batch and size + n > MANY_MAX_BYTES):
                    break
                batch.append(h)
                size += n
            if len(batch) > 1:
                await self._complete_many(c, batch)
                return True
        if ok:
            await self._complete(c, ok[0])
            return True
        for h in list(self._held.values()):
            if h.state == "working" and (h.heartbeat_waiters or (not self._shutting_down and h.next_heartbeat <= now)):
                await self._heartbeat(c, h)
                return True
        if self._shutting_down or self._free() <= 0:
            return False
        if self._next_poll <= now:
            for k in self._kinds.values():
                k.want = True
            self._next_poll = now + self.poll_interval
        for k in self._kinds.values():
            n = min(self._free_for(k), self.batch)
            if not k.want or n <= 0:
                continue
            k.want = False
            await self._claim(c, k, n)
            return True
        return False

    async def _claim(self, c: psycopg.AsyncConnection, k: _Kind, n: int) -> None:
        many = n > 1 and self._claim_many
        k.again = False
        try:
            if many:
                cur = await c.execute(CLAIM_COLS + " FROM parflow_claim(%s::text, %s::text, %s::interval, max_tasks => %s::int) AS c",
                                      (k.kind, self.name, self._lease_text(), n))
            else:
                cur = await c.execute(CLAIM_COLS + " FROM parflow_claim(%s::text, %s::text, %s::interval) AS c",
                                      (k.kind, self.name, self._lease_text()))
            rows = await cur.fetchall()
        except psycopg.Error as err:
            if is_connection_error(err):
                raise
            if many and _sqlstate(err) in ("42883", "42725"):
                self._claim_many = False
                k.want = True
                return
            msg = str(from_server(err))
            (log.debug if msg == self._last_claim_error else log.error)("could not claim %s: %s", k.kind, msg)
            self._last_claim_error = msg
            return
        self._last_claim_error = ""
        got = self._take(k.kind, rows)
        k.want = got >= (n if many else 1) or k.again

    def _take(self, kind: str, rows: Sequence[Mapping[str, Any]]) -> int:
        n = 0
        for r in rows:
            if r["task"] is None or r["token"] is None:
                continue
            t = Task(id=int(r["task"]), token=str(r["token"]), run=int(r["run"]), stage=r["stage"], kind=kind,
                     attempt=int(r["attempt"]), input=r["input"] or {}, estimate_seconds=r["estimate"],
                     lease_until=r["lease_until"], item=r["item"])
            h = _Held(task=t, next_heartbeat=time.monotonic() + self.lease_seconds / 3)
            self._held[t.id] = h
            self.stats["claimed"] += 1
            n += 1
            if self._shutting_down:
                h.state = "release"
            else:
                self._run(h)
        return n

    def _run(self, h: _Held) -> None:
        k = self._kinds[h.task.kind]
        h.ctx = Context(self, h)

        async def job() -> None:
            try:
                if k.sync:
                    out = await asyncio.to_thread(k.handler, h.task, h.ctx)
                else:
                    out = k.handler(h.task, h.ctx)
                    if asyncio.iscoroutine(out) or isinstance(out, asyncio.Future):
                        out = await out
            except asyncio.CancelledError as err:
                self._settled(h, False, err)
                return
            except Exception as err:
                self._settled(h, False, err)
                return
            self._settled(h, True, out)

        h.job = asyncio.create_task(job())

    def _stop_handler(self, h: _Held, after: str, reason: str) -> None:
        h.after = after
        if h.ctx is not None and h.ctx.stop_reason is None:
            h.ctx.stop_reason = reason
            h.ctx.stopped.set()
        k = self._kinds[h.task.kind]
        if not k.sync and h.job is not None and not h.job.done():
            h.job.cancel()

    def _settled(self, h: _Held, ok: bool, value: Any) -> None:
        for w in h.heartbeat_waiters:
            if not w.done():
                w.set_exception(ArgumentError("the handler has returned"))
        h.heartbeat_waiters.clear()
        if self._held.get(h.task.id) is not h:
            return
        if h.after == "drop":
            self._forget(h, "dropped")
            return
        if not ok and h.after == "release":
            h.state = "release"
            self._wakeup()
            return
        h.state = "report"
        if ok:
            out = {} if value is None else value
            problem = None
            text = None
            if not isinstance(out, dict):
                problem = f'the handler of agent kind "{h.task.kind}" returned {describe(out)}: the output must be a JSON object (a dict)'
            else:
                try:
                    text = json.dumps(out)
                except (TypeError, ValueError) as err:
                    problem = f'the output of the handler of agent kind "{h.task.kind}" is not JSON: {err}'
            if problem is not None:
                log.error("task %s (%s): %s", h.task.id, h.task.stage, problem)
                h.report = {"kind": "fail", "error": problem, "retryable": False, "output": None}
            else:
                h.report = {"kind": "complete", "output": text}
        else:
            nonretryable = isinstance(value, NonRetryableError)
            output = None
            if nonretryable and value.output is not None:
                try:
                    output = json.dumps(value.output)
                except (TypeError, ValueError):
                    output = None
            if isinstance(value, asyncio.CancelledError):
                text = "the handler was cancelled"
            else:
                text = _error_text(value) or "handler failed"
            h.report = {"kind": "fail", "error": text, "retryable": not nonretryable, "output": output}
        self._wakeup()

    def _forget(self, h: _Held, what: str) -> None:
        if self._held.get(h.task.id) is h:
            del self._held[h.task.id]
        self.stats[what] += 1
        k = self._kinds.get(h.task.kind)
        if k is not None:
            k.want = True
        self._wakeup()

    def _refused(self, h: _Held, err: BaseException) -> None:
        code = _sqlstate(err)
        msg = str(from_server(err))
        if code == "55000":
            log.log(logging.INFO if h.resend else logging.WARNING, "task %s: result not recorded%s: %s", h.task.id,
                    " (sent again after a reconnect: the first one may have been recorded)" if h.resend else "", msg)
            self._forget(h, "dropped")
        elif _transient(code):
            h.retry_at = time.monotonic() + RETRY_S
        elif h.report and h.report["kind"] == "complete":
            log.error("task %s: completion refused, failing the task: %s", h.task.id, msg)
            h.report = {"kind": "fail", "error": f"parflow_complete refused the result: {msg}", "retryable": False, "output": None}
        else:
            log.error("task %s: could not report, dropping it (its lease will expire): %s", h.task.id, msg)
            self._forget(h, "dropped")

    async def _call(self, hs: List[_Held], c: psycopg.AsyncConnection, query: str, params: Sequence[Any]) -> List[Dict[str, Any]]:
        try:
            cur = await c.execute(query, params)
            return await cur.fetchall()
        except Exception as err:
            if is_connection_error(err):
                for h in hs:
                    h.resend = True
            raise

    async def _complete(self, c: psycopg.AsyncConnection, h: _Held) -> None:
        out = h.report["output"]
        k = self._kinds[h.task.kind]
        if self.use_cac and self._cac_ok and not self._shutting_down and not h.resend and not h.plain and self._free_for(k, 1) > 0:
            k.again = False
            try:
                rows = await self._call([h], c, CLAIM_COLS + " FROM parflow_complete_and_claim(%s::bigint, %s::uuid, %s::jsonb, "
                                        "%s::text, %s::text, %s::interval) AS c",
                                        (h.task.id, h.task.token, out, h.task.kind, self.name, self._lease_text()))
            except psycopg.Error as err:
                if is_connection_error(err):
                    raise
                code = _sqlstate(err)
                if code in ("42883", "42725"):
                    self._cac_ok = False
                elif code == "55000" or _transient(code):
                    self._refused(h, err)
                else:
                    h.plain = True
                return
            self._forget(h, "completed")
            k.want = self._take(h.task.kind, rows) > 0 or k.again
            return
        try:
            await self._call([h], c, "SELECT parflow_complete(%s::bigint, %s::uuid, %s::jsonb)", (h.task.id, h.task.token, out))
        except psycopg.Error as err:
            if is_connection_error(err):
                raise
            self._refused(h, err)
            return
        self._forget(h, "completed")

    async def _complete_many(self, c: psycopg.AsyncConnection, hs: List[_Held]) -> None:
        try:
            rows = await self._call(hs, c, "SELECT m.task, m.accepted, m.sqlstate, m.message "
                                    "FROM parflow_complete_many(%s::bigint[], %s::uuid[], %s::jsonb[]) AS m",
                                    ([h.task.id for h in hs], [h.task.token for h in hs], [h.report["output"] for h in hs]))
        except psycopg.Error as err:
            if is_connection_error(err):
                raise
            code = _sqlstate(err)
            for h in hs:
                if code in ("42883", "42725"):
                    self._many_ok = False
                elif _transient(code):
                    h.retry_at = time.monotonic() + RETRY_S
                else:
                    h.plain = True
            return
        by_id = {h.task.id: h for h in hs}
        for r in rows:
            h = by_id.pop(int(r["task"]), None)
            if h is None:
                continue
            if r["accepted"]:
                self._forget(h, "completed")
            else:
                self._refused(h, ParflowError(r["message"] or "refused", r["sqlstate"]))
        for h in by_id.values():
            h.plain = True

    async def _fail(self, c: psycopg.AsyncConnection, h: _Held) -> None:
        r = h.report
        try:
            await self._call([h], c, "SELECT parflow_fail(%s::bigint, %s::uuid, %s::text, %s::boolean, %s::jsonb)",
                             (h.task.id, h.task.token, r["error"], r["retryable"], r["output"]))
        except psycopg.Error as err:
            if is_connection_error(err):
                raise
            self._refused(h, err)
            return
        self._forget(h, "failed")

    async def _release(self, c: psycopg.AsyncConnection, h: _Held) -> None:
        try:
            await self._call([h], c, "SELECT parflow_release(%s::bigint, %s::uuid)", (h.task.id, h.task.token))
        except psycopg.Error as err:
            if is_connection_error(err):
                raise
            code = _sqlstate(err)
            if _transient(code):
                h.retry_at = time.monotonic() + RETRY_S
                return
            if code != "55000":
                log.error("task %s: could not release (its lease will expire): %s", h.task.id, from_server(err))
            self._forget(h, "dropped")
            return
        self._forget(h, "released")

    async def _heartbeat_now(self, h: _Held) -> datetime:
        if h.state != "working" or h.after is not None:
            raise ArgumentError("the task is stopped: no heartbeat")
        fut = asyncio.get_running_loop().create_future()
        h.heartbeat_waiters.append(fut)
        self._wakeup()
        return await fut

    async def _heartbeat(self, c: psycopg.AsyncConnection, h: _Held) -> None:
        waiters, h.heartbeat_waiters = h.heartbeat_waiters, []
        try:
            cur = await c.execute("SELECT parflow_heartbeat(%s::bigint, %s::uuid) AS until", (h.task.id, h.task.token))
            until = (await cur.fetchone())["until"]
        except psycopg.Error as err:
            if is_connection_error(err):
                h.heartbeat_waiters = waiters + h.heartbeat_waiters
                raise
            e = from_server(err)
            for w in waiters:
                if not w.done():
                    w.set_exception(e)
            if _sqlstate(err) == "55000":
                log.warning("task %s (%s): lease lost: %s", h.task.id, h.task.stage, e)
                if h.state == "working":
                    self._stop_handler(h, "drop", "lease-lost")
            else:
                h.next_heartbeat = time.monotonic() + min(RETRY_S, self.lease_seconds / 3)
            return
        h.task.lease_until = until
        h.next_heartbeat = time.monotonic() + self.lease_seconds / 3
        for w in waiters:
            if not w.done():
                w.set_result(until)

    def _notified(self, channel: str, payload: str) -> None:
        kind = self._channels.get(channel)
        if kind is None:
            return
        try:
            msg = json.loads(payload or "{}")
        except ValueError:
            return
        if msg.get("kind") == "dispatch":
            self._kinds[kind].want = self._kinds[kind].again = True
            self._wakeup()
            return
        h = self._held.get(msg.get("task")) if isinstance(msg.get("task"), int) else None
        if h is None:
            return
        if msg.get("kind") == "interrupt":
            if h.state == "working" and h.after is None:
                log.info("task %s (%s): interrupted", h.task.id, h.task.stage)
                self._stop_handler(h, "release", "interrupt")
        elif msg.get("kind") == "cancel":
            log.info("task %s (%s): cancelled", h.task.id, h.task.stage)
            if h.state == "working":
                self._stop_handler(h, "drop", "cancel")
            else:
                h.retry_at = 0.0
                h.state = "release"
            self._wakeup()

    async def _stop(self, timeout: float) -> None:
        self._shutting_down = True
        self._wakeup()
        deadline = time.monotonic() + timeout
        while any(h.state == "working" for h in self._held.values()) and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        for h in list(self._held.values()):
            if h.state == "working" and h.after is None:
                self._stop_handler(h, "release", "shutdown")
        hard = time.monotonic() + max(timeout, 10.0)
        while self._held and time.monotonic() < hard:
            self._wakeup()
            await asyncio.sleep(0.02)
        if self._held:
            log.warning("stopping with %d task(s) not reported: their leases will expire", len(self._held))
        self._closed = True
        self._wakeup()
        for t in self._tasks[1:]:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# ---- the operator --------------------------------------------------------------


class AsyncOperator:
    """Define workflows, start runs, wait for them, read and control them."""

    def __init__(self, connection: Optional[str] = None) -> None:
        if connection is not None and not isinstance(connection, str):
            raise ArgumentError(f"connection must be a conninfo string, not {describe(connection)}")
        self.conninfo = connection or ""
        self._conn: Optional[psycopg.AsyncConnection] = None
        self._lock = asyncio.Lock()
        self._listener: Optional[asyncio.Task] = None
        self._listening: Optional[asyncio.Future] = None
        self._waiters: Dict[int, List[Dict[str, Any]]] = {}
        self._closed = False

    async def _connect(self) -> psycopg.AsyncConnection:
        kw: Dict[str, Any] = {"autocommit": True, "row_factory": dict_row, "connect_timeout": 10}
        if "application_name" not in self.conninfo:
            kw["application_name"] = "parflow-python-operator"
        return await psycopg.AsyncConnection.connect(self.conninfo, **kw)

    async def query(self, query: str, params: Sequence[Any] = (), *, retry: bool = False) -> List[Dict[str, Any]]:
        """Run a statement (the connection is reopened when lost; a read with
        retry=True is sent again once on a new one); server errors as ParflowError."""
        if self._closed:
            raise ArgumentError("the operator is closed")
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await self._connect()
                    cur = await self._conn.execute(query, params)
                    return await cur.fetchall() if cur.description else []
                except psycopg.Error as err:
                    if is_connection_error(err) and self._conn is not None:
                        await self._conn.close()
                        self._conn = None
                    if not (retry and attempt == 1 and is_connection_error(err)):
                        raise from_server(err) from None
        raise AssertionError("not reached")

    async def define(self, name: str, spec: Mapping[str, Any]) -> int:
        """Validate spec against the workflow schema, then parflow_define; the new version."""
        check_name(name, "workflow name")
        validate_spec(spec)
        rows = await self.query("SELECT parflow_define(%s::text, %s::jsonb) AS v", (name, json.dumps(spec)))
        return int(rows[0]["v"])

    async def start(self, workflow: str, *, flags: Sequence[str] = (), priority: int = 2,
                    parallel: Optional[bool] = None, input: Optional[Mapping[str, Any]] = None) -> "AsyncRun":
        """Start a run of the latest version of a workflow."""
        check_name(workflow, "workflow name")
        if isinstance(flags, str) or not all(isinstance(f, str) and f.strip() for f in flags):
            raise ArgumentError("flags must be a sequence of non-empty strings")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 3:
            raise ArgumentError(f"priority must be 0, 1, 2 or 3 (found {priority!r})")
        if parallel is not None and not isinstance(parallel, bool):
            raise ArgumentError(f"parallel must be a bool or None, not {describe(parallel)}")
        data = {} if input is None else input
        if not isinstance(data, dict):
            raise ArgumentError(f"input must be a JSON object (a dict), not {describe(data)}")
        rows = await self.query("SELECT parflow_start(%s::text, %s::text[], %s::int, %s::boolean, %s::jsonb) AS run",
                                (workflow, list(flags), priority, parallel, json.dumps(data)))
        return AsyncRun(self, int(rows[0]["run"]))

    def run(self, run_id: int) -> "AsyncRun":
        """A handle on an existing run."""
        if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id < 1:
            raise ArgumentError(f"run must be a positive integer, not {describe(run_id)}")
        return AsyncRun(self, run_id)

    async def estimate(self, workflow: str, flags: Sequence[str] = ()) -> Dict[str, Any]:
        check_name(workflow, "workflow name")
        rows = await self.query("SELECT sequential::text, parallel::text, savings_pct::float8 AS savings_pct, "
                                "critical_path::text, lower_bound::text FROM parflow_estimate(%s::text, %s::text[])",
                                (workflow, list(flags)))
        return rows[0]

    async def close(self) -> None:
        self._closed = True
        for ws in self._waiters.values():
            for w in ws:
                if not w["future"].done():
                    w["future"].set_exception(ArgumentError("the operator was closed"))
        self._waiters.clear()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> "AsyncOperator":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- waiting -------------------------------------------------------------

    async def _wait(self, run: int, timeout: Optional[float], through_blocked: bool) -> Dict[str, Any]:
        if self._closed:
            raise ArgumentError("the operator is closed")
        fut = asyncio.get_running_loop().create_future()
        w = {"future": fut, "through_blocked": through_blocked}
        self._waiters.setdefault(run, []).append(w)
        try:
            if self._listener is None:
                self._listening = asyncio.get_running_loop().create_future()
                self._listener = asyncio.create_task(self._listen())
            await asyncio.shield(self._listening)
            await self._catch_up([run])
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"run {run} did not finish within {timeout} s") from None
        finally:
            ws = self._waiters.get(run, [])
            if w in ws:
                ws.remove(w)
            if not ws:
                self._waiters.pop(run, None)

    async def _listen(self) -> None:
        backoff = BACKOFF_MIN
        first = True
        while not self._closed:
            try:
                conn = await self._connect()
                await conn.execute("LISTEN parflow_orchestrator")
            except Exception as err:
                if first:
                    self._listening.set_exception(from_server(err))
                    self._listener = None
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_MIN
            if first:
                first = False
                self._listening.set_result(None)
            else:
                asyncio.create_task(self._catch_up(list(self._waiters)))
            try:
                async for n in conn.notifies():
                    self._announced(n.payload)
            except asyncio.CancelledError:
                await conn.close()
                raise
            except Exception as err:
                log.info("operator listener lost, reconnecting: %s", err)
            await conn.close()

    async def _catch_up(self, runs: List[int]) -> None:
        """The last run_* event of each run waited for: resolve those that finished."""
        if not runs:
            return
        try:
            rows = await self.query(
                """SELECT r.run, e.kind, EXISTS (SELECT FROM parflow.runs x WHERE x.run = r.run) AS exists
                     FROM unnest(%s::bigint[]) AS r(run)
                     LEFT JOIN LATERAL (SELECT substr(e.kind, 5) AS kind FROM parflow.events e
                                         WHERE e.run = r.run AND e.kind LIKE 'run\\_%%'
                                         ORDER BY e.event DESC LIMIT 1) e ON true""", (runs,), retry=True)
        except Exception as err:
            for run in runs:
                for w in self._waiters.get(run, []):
                    if not w["future"].done():
                        w["future"].set_exception(err)
            return
        for r in rows:
            if not r["exists"]:
                for w in self._waiters.get(r["run"], []):
                    if not w["future"].done():
                        w["future"].set_exception(ParflowError(f"run {r['run']} does not exist", "42704"))
            elif r["kind"] in FINAL:
                await self._finished(r["run"], r["kind"], None)

    def _announced(self, payload: str) -> None:
        try:
            m = json.loads(payload or "{}")
        except ValueError:
            return
        if isinstance(m.get("run"), int) and m.get("kind") in FINAL:
            asyncio.create_task(self._finished(m["run"], m["kind"], None if m.get("truncated") else m.get("failures")))

    async def _finished(self, run: int, state: str, failures: Optional[List[Dict[str, Any]]]) -> None:
        ws = [w for w in self._waiters.get(run, []) if not (state == "blocked" and w["through_blocked"]) and not w["future"].done()]
        if not ws:
            return
        if state == "blocked" and failures is None:
            try:
                failures = await AsyncRun(self, run).failures()
            except Exception as err:
                for w in ws:
                    if not w["future"].done():
                        w["future"].set_exception(err)
                return
        for w in ws:
            if not w["future"].done():
                w["future"].set_result({"run": run, "state": state, "failures": failures or []})


class AsyncRun:
    """A run: wait for it, read its results, control it."""

    def __init__(self, operator: AsyncOperator, run_id: int) -> None:
        self.operator = operator
        self.id = run_id

    def __repr__(self) -> str:
        return f"<parflow run {self.id}>"

    async def wait(self, timeout: Optional[float] = None, through_blocked: bool = False) -> Dict[str, Any]:
        """Until the run has succeeded, is blocked (unless through_blocked) or
        was cancelled: {"run", "state", "failures"}."""
        return await self.operator._wait(self.id, timeout, through_blocked)

    async def state(self) -> str:
        rows = await self.operator.query("SELECT state FROM parflow.runs WHERE run = %s", (self.id,), retry=True)
        if not rows:
            raise ParflowError(f"run {self.id} does not exist", "42704")
        return rows[0]["state"]

    async def result(self) -> Dict[str, Any]:
        return (await self.operator.query("SELECT parflow_result(%s::bigint) AS r", (self.id,), retry=True))[0]["r"]

    async def failures(self) -> List[Dict[str, Any]]:
        return (await self.operator.query("SELECT parflow_failures(%s::bigint) AS f", (self.id,), retry=True))[0]["f"] or []

    async def report(self) -> Dict[str, Any]:
        return (await self.operator.query(
            "SELECT workflow, version, state, parallel, planned::text, actual::text, work::text, "
            "realised_savings_pct::float8 AS realised_savings_pct, off_plan_pct::float8 AS off_plan_pct "
            "FROM parflow_report(%s::bigint)", (self.id,)))[0]

    async def cancel(self) -> None:
        await self.operator.query("SELECT parflow_cancel(%s::bigint)", (self.id,))

    async def pause(self) -> None:
        await self.operator.query("SELECT parflow_pause(%s::bigint)", (self.id,))

    async def resume(self) -> None:
        await self.operator.query("SELECT parflow_resume(%s::bigint)", (self.id,))

    async def retry(self, stage: str) -> None:
        check_name(stage, "stage name")
        await self.operator.query("SELECT parflow_retry(%s::bigint, %s::text)", (self.id, stage))

    async def restart_group(self, group: str) -> None:
        check_name(group, "group name")
        await self.operator.query("SELECT parflow_restart_group(%s::bigint, %s::text)", (self.id, group))

    async def signal(self, event: str, payload: Optional[Mapping[str, Any]] = None) -> int:
        """Deliver an event to the run's wait stages (a server with parflow_signal)."""
        check_name(event, "event name")
        data = {} if payload is None else payload
        if not isinstance(data, dict):
            raise ArgumentError(f"payload must be a JSON object (a dict), not {describe(data)}")
        return await self._wait_stage("SELECT parflow_signal(%s::bigint, %s::text, %s::jsonb)::int AS n",
                                      (self.id, event, json.dumps(data)), "parflow_signal")

    async def reject(self, event: str, reason: str) -> int:
        """Refuse an event the run's wait stages await (a server with parflow_reject)."""
        check_name(event, "event name")
        check_name(reason, "reason")
        return await self._wait_stage("SELECT parflow_reject(%s::bigint, %s::text, %s::text)::int AS n",
                                      (self.id, event, reason), "parflow_reject")

    async def _wait_stage(self, query: str, params: Sequence[Any], fn: str) -> int:
        try:
            return int((await self.operator.query(query, params))[0]["n"])
        except ParflowError as err:
            if err.sqlstate == "42883":
                raise ParflowError(f"this server has no {fn}: wait stages need a newer parflow", "42883", err.message) from err
            raise
