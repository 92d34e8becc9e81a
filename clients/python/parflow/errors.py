"""The errors of the client: bad arguments found before any SQL is sent
(ArgumentError, SpecError), server errors with their SQLSTATE, detail and
hint (ParflowError), and the error a handler raises to fail its task for good
(NonRetryableError)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import psycopg


class ArgumentError(ValueError):
    """A bad argument, found by the client before any SQL is sent."""


class SpecError(ArgumentError):
    """A workflow spec that fails schema/workflow.schema.json."""

    def __init__(self, message: str, instance_path: str, schema_path: str) -> None:
        super().__init__(message)
        self.instance_path = instance_path
        self.schema_path = schema_path


class ParflowError(Exception):
    """An error raised by the server, with its fields intact."""

    def __init__(self, message: str, sqlstate: Optional[str] = None,
                 detail: Optional[str] = None, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        parts = [self.message]
        if self.detail:
            parts.append(f"DETAIL: {self.detail}")
        if self.hint:
            parts.append(f"HINT: {self.hint}")
        if self.sqlstate:
            parts.append(f"(SQLSTATE {self.sqlstate})")
        return " ".join(parts)


class NonRetryableError(Exception):
    """Raised by a handler: the task fails for good (parflow_fail with
    retryable => false); ``output`` is stored with the failure."""

    def __init__(self, message: str, output: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(message)
        self.output = dict(output) if output is not None else None


def from_server(err: BaseException) -> BaseException:
    """A psycopg server error as a ParflowError (others unchanged)."""
    if isinstance(err, psycopg.Error) and err.diag.sqlstate and not is_connection_error(err):
        d = err.diag
        e = ParflowError(d.message_primary or str(err), d.sqlstate, d.message_detail, d.message_hint)
        e.__cause__ = err
        return e
    return err


def is_connection_error(err: BaseException) -> bool:
    """Whether an error means the connection is gone (or going)."""
    if isinstance(err, (OSError, ConnectionError)):
        return True
    if not isinstance(err, psycopg.Error):
        return False
    state = err.diag.sqlstate if err.diag else None
    if isinstance(err, psycopg.OperationalError) and not state:
        return True
    return bool(state) and (state.startswith("08") or state.startswith("57P"))
