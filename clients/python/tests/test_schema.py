"""The workflow schema against parflow_define, and bad arguments refused
before any SQL is sent (the connection points at a port nobody listens on)."""
import asyncio
import re

import psycopg
import pytest

from conftest import FIXTURES
from parflow import (ArgumentError, AsyncOperator, AsyncWorker, Operator, ParflowError, SpecError, Worker,
                     validate_spec, workflow_schema)

NOWHERE = "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2"


def server_define(sql, name, spec):
    try:
        sql("SELECT parflow_define(%s, %s::jsonb)", (name, psycopg.types.json.Jsonb(spec)))
        return None
    except psycopg.Error as err:
        return err.diag.sqlstate


@pytest.mark.parametrize("name", sorted(FIXTURES["valid"]))
def test_valid(sql, name):
    validate_spec(FIXTURES["valid"][name])
    assert server_define(sql, "py_schema_" + re.sub(r"\W", "_", name), FIXTURES["valid"][name]) is None


@pytest.mark.parametrize("name", sorted(FIXTURES["invalid"]))
def test_invalid(sql, name):
    case = FIXTURES["invalid"][name]
    with pytest.raises(SpecError) as e:
        validate_spec(case["spec"])
    assert e.value.schema_path == case["schema_path"]
    assert f"(schema path {case['schema_path']})" in str(e.value)
    assert server_define(sql, "py_schema_bad", case["spec"]) == case["sqlstate"]


def test_keys_match_the_server(sql):
    schema = workflow_schema()
    base = {"name": "g", "stages": [{"name": "s", "agent": "a", "estimate": "1 min"}]}
    levels = [
        ({"groups": [base], "zz": 1}, schema["properties"]),
        ({"groups": [dict(base, zz=1)]}, schema["definitions"]["Group"]["properties"]),
        ({"groups": [{"name": "g", "stages": [dict(base["stages"][0], zz=1)]}]}, schema["definitions"]["Stage"]["properties"]),
        ({"groups": [base], "affinity": [{"agents": ["a"], "max_concurrent": 1, "zz": 1}]},
         schema["definitions"]["AffinityRule"]["properties"]),
    ]
    for spec, props in levels:
        with pytest.raises(psycopg.Error) as e:
            sql("SELECT parflow_define('py_schema_keys', %s::jsonb)", (psycopg.types.json.Jsonb(spec),))
        m = re.match(r"^Valid keys are: (.*)\.$", e.value.diag.message_detail or "")
        assert m, e.value.diag.message_detail
        assert sorted(props) == sorted(m.group(1).split(", ")), "schema/workflow.schema.json and parflow_define disagree"


def test_bad_arguments_before_any_sql():
    for kw, msg in [({"concurrency": -1}, "concurrency must be an integer from 1"),
                    ({"concurrency": 0}, "concurrency"), ({"lease": -5}, "lease must be positive"),
                    ({"lease": "-5 min"}, "lease must be positive"), ({"lease": "soon"}, "is not a duration"),
                    ({"batch": 1001}, "batch must be an integer from 1 to 1000")]:
        with pytest.raises(ArgumentError, match=msg):
            Worker(NOWHERE, **kw)
    w = AsyncWorker(NOWHERE)
    with pytest.raises(ArgumentError, match="agent kind must not be empty"):
        w.handle("", lambda t, c: {})
    with pytest.raises(ArgumentError, match="longer than 55 bytes"):
        w.handle("a" * 56, lambda t, c: {})
    with pytest.raises(ArgumentError, match="control character"):
        w.handle("a\nb", lambda t, c: {})
    with pytest.raises(ArgumentError, match="must be callable"):
        w.handle("ok", "nope")
    with pytest.raises(ArgumentError, match="no handler"):
        asyncio.run(w.start())

    async def operator_args():
        op = AsyncOperator(NOWHERE)
        with pytest.raises(ArgumentError, match="priority must be 0, 1, 2 or 3"):
            await op.start("wf", priority=7)
        with pytest.raises(ArgumentError, match="input must be a JSON object"):
            await op.start("wf", input=[1])
        with pytest.raises(ArgumentError, match="flags must be a sequence of non-empty strings"):
            await op.start("wf", flags=["ok", ""])
        with pytest.raises(ArgumentError, match="run must be a positive integer"):
            op.run(-3)
        with pytest.raises(SpecError, match=r'lacks required key "estimate" \(schema path #/definitions/Stage/allOf/2/then/required\)'):
            await op.define("wf", {"groups": [{"name": "g", "stages": [{"name": "s", "agent": "a"}]}]})
        await op.close()
    asyncio.run(operator_args())


def test_server_errors_keep_their_fields(sql):
    with Operator() as op:
        op.define("py_args_wf", {"groups": [{"name": "g", "stages": [{"name": "s", "agent": "py_args", "estimate": "1 min"}]}]})
        with pytest.raises(ParflowError) as e:
            op.start("py_args_wff")
        assert e.value.sqlstate == "42704"
        assert e.value.message == 'workflow "py_args_wff" does not exist'
        assert e.value.hint == 'Did you mean "py_args_wf"?'
        with pytest.raises(ParflowError) as e:
            op.define("py_args_dup", {"groups": [{"name": "g", "stages": [
                {"name": "s", "agent": "x", "estimate": "1 min"}, {"name": "s", "agent": "x", "estimate": "1 min"}]}]})
        assert e.value.sqlstate == "23505" and e.value.hint == "Each stage of a workflow needs its own name."
        run = op.start("py_args_wf")
        run.cancel()
        with pytest.raises(ParflowError) as e:
            run.resume()
        assert e.value.sqlstate == "55000"
