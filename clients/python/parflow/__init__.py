"""parflow: workers (handlers per agent kind) and operators (define, start,
wait, results, control) for the parflow PostgreSQL extension, sync
(parflow.Worker, parflow.Operator) and asyncio (parflow.AsyncWorker,
parflow.AsyncOperator), on psycopg 3."""
from .aio import AsyncOperator, AsyncRun, AsyncWorker, Context, Task
from .errors import ArgumentError, NonRetryableError, ParflowError, SpecError
from .sync import Operator, Run, SyncContext, Worker
from .validate import validate_spec, workflow_schema

__all__ = [
    "AsyncOperator", "AsyncRun", "AsyncWorker", "Context", "Task",
    "ArgumentError", "NonRetryableError", "ParflowError", "SpecError",
    "Operator", "Run", "SyncContext", "Worker", "validate_spec", "workflow_schema",
]
__version__ = "0.4.0"
