"""Check a workflow spec against schema/workflow.schema.json before
parflow_define is called: the first problem becomes a SpecError naming where
in the spec it is and which rule of the schema it breaks."""
from __future__ import annotations

import json
from importlib import resources
from typing import Any, Dict, List

from .errors import SpecError

_schema: Dict[str, Any] = json.loads(resources.files(__package__).joinpath("workflow.schema.json").read_text())


def workflow_schema() -> Dict[str, Any]:
    """The workflow spec's JSON Schema (a copy)."""
    return json.loads(json.dumps(_schema))


def _at(base: Any, path: List[Any]) -> Any:
    node = base
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


def _pointer(parts: List[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _index(node: Any, path: str, out: Dict[int, str]) -> None:
    if isinstance(node, dict):
        out.setdefault(id(node), path)
        for k, v in node.items():
            _index(v, path + "/" + str(k).replace("~", "~0").replace("/", "~1"), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _index(v, f"{path}/{i}", out)


_where: Dict[int, str] = {}
_index(_schema, "#", _where)


def _schema_path(err: Any) -> str:
    """The failing rule as a pointer from the schema's root ('#/definitions/Stage/required')."""
    base = _where.get(id(err.schema))
    if base is None:
        return "#" + _pointer(list(err.schema_path))
    return f"{base}/{err.validator}"


def _text(err: Any) -> str:
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        return f'unknown key "{extra[0]}"' if extra else err.message
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        return f'lacks required key "{missing[0]}"' if missing else err.message
    return err.message


def validate_spec(spec: Any) -> None:
    """Raise SpecError unless spec satisfies the workflow schema."""
    import jsonschema

    validator = jsonschema.Draft7Validator(_schema)
    errors = sorted(validator.iter_errors(spec), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    e = errors[0]
    where = _pointer(list(e.absolute_path))
    sp = _schema_path(e)
    raise SpecError(f"workflow spec is invalid at {where or 'its top level'}: {_text(e)} (schema path {sp})", where, sp)
