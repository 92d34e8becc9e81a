"""Shared by the tests: the cluster comes from the PG* variables (test/run.sh
exports them); workflows and kinds are named py_<test>_..."""
import json
import os
import time
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = json.loads((ROOT / "clients" / "fixtures" / "specs.json").read_text())


class Sql:
    def __init__(self) -> None:
        self.conn = psycopg.connect("", autocommit=True, application_name="parflow-python-test")
        self.conn.execute("SET client_min_messages = warning")
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS parflow")

    def __call__(self, query, params=()):
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def until(self, query, params=(), timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            rows = self(query, params)
            if rows and rows[0][0] is True:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {query} {params}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def sql():
    s = Sql()
    yield s
    s("SELECT parflow_cancel(run) FROM parflow.runs WHERE workflow LIKE 'py\\_%%' AND state IN ('running', 'paused', 'blocked')")
    s.conn.close()


def one_group(kind, stages, estimate="1 min", **extra):
    names = [f"s{i + 1}" for i in range(stages)] if isinstance(stages, int) else stages
    return {"groups": [{"name": "g", "stages": [dict(name=n, agent=kind, estimate=estimate, **extra) for n in names]}]}
