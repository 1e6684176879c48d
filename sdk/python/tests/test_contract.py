"""The SDK's wire types against the repository's openapi.json, field by field.

A change of the contract that the SDK does not follow (a field added, renamed, retyped, made
required or optional, a component added or removed, a route the SDK calls gone) fails here.
Regenerate with ``python scripts/gen_wire.py`` and make the code that reads the types follow
(mypy --strict then points at every use of a changed field).
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pytest
import typing_extensions
from typing_extensions import NotRequired, is_typeddict

from dynatask import _wire

ROOT = Path(__file__).resolve().parents[3]
SRC = Path(__file__).resolve().parents[1] / "src" / "dynatask"
DOC: dict[str, Any] = json.loads((ROOT / "openapi.json").read_text())
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]

_PRIMITIVES: dict[str, object] = {"string": str, "integer": int, "number": float, "boolean": bool}


def _union_args(tp: object) -> tuple[object, ...]:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(tp)
    return (tp,)


class Checker:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.problems: list[str] = []

    def fail(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def check(self, schema: dict[str, Any], tp: object, where: str) -> None:
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            target = SCHEMAS[name]
            if target.get("type") == "object" and "properties" in target:
                if getattr(tp, "__name__", None) != name:
                    self.fail(where, f"expected the TypedDict {name}, found {tp!r}")
                    return
                self.typed_dict(name, target, tp)
            else:
                self.check(target, tp, where)
            return
        if "anyOf" in schema:
            members: list[dict[str, Any]] = schema["anyOf"]
            args = list(_union_args(tp))
            if any(m.get("type") == "null" for m in members):
                if type(None) not in args:
                    self.fail(where, f"nullable in the contract, not in the SDK ({tp!r})")
                args = [a for a in args if a is not type(None)]
            elif type(None) in args:
                self.fail(where, f"not nullable in the contract ({tp!r})")
            others = [m for m in members if m.get("type") != "null"]
            if len(others) == 1:
                rest: object = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
                self.check(others[0], rest, where)
                return
            if len(others) != len(args):
                self.fail(
                    where, f"{len(others)} alternatives in the contract, {len(args)} in the SDK"
                )
                return
            for i, m in enumerate(others):
                ref = str(m.get("$ref", "")).rsplit("/", 1)[-1]
                match = [a for a in args if getattr(a, "__name__", None) == ref]
                if not ref or not match:
                    self.fail(f"{where}|{i}", f"no alternative {ref or m} in the SDK ({tp!r})")
                    continue
                self.check(m, match[0], f"{where}|{ref}")
            return
        if "enum" in schema:
            if typing.get_origin(tp) is not Literal:
                self.fail(where, f"expected Literal{schema['enum']}, found {tp!r}")
            elif set(typing.get_args(tp)) != set(schema["enum"]):
                self.fail(
                    where,
                    f"values {schema['enum']} in the contract, {typing.get_args(tp)} in the SDK",
                )
            return
        t = schema.get("type")
        if t in _PRIMITIVES:
            if tp is not _PRIMITIVES[t]:
                self.fail(where, f"expected {t}, found {tp!r}")
            return
        if t == "array":
            if typing.get_origin(tp) is not list:
                self.fail(where, f"expected a list, found {tp!r}")
                return
            self.check(schema["items"], typing.get_args(tp)[0], f"{where}[]")
            return
        if t == "object":
            if "properties" in schema:
                self.typed_dict(where, schema, tp)
            elif typing.get_origin(tp) is not dict:
                self.fail(where, f"expected a dict, found {tp!r}")
            return
        if tp is not Any:
            self.fail(where, f"any JSON value in the contract, {tp!r} in the SDK")

    def typed_dict(self, where: str, schema: dict[str, Any], tp: object) -> None:
        if not is_typeddict(tp):
            self.fail(where, f"expected a TypedDict, found {tp!r}")
            return
        name = str(getattr(tp, "__name__", ""))
        if name in self.seen:
            return
        self.seen.add(name)
        hints = typing_extensions.get_type_hints(tp)
        props: dict[str, Any] = schema["properties"]
        for extra in sorted(set(hints) - set(props)):
            self.fail(f"{name}.{extra}", "in the SDK, not in the contract")
        for missing in sorted(set(props) - set(hints)):
            self.fail(f"{name}.{missing}", "in the contract, not in the SDK")
        required = set(schema.get("required", []))
        # The module's annotations are strings (PEP 563), which __required_keys__ does not read.
        extras = typing_extensions.get_type_hints(tp, include_extras=True)
        sdk_required = {k for k, h in extras.items() if not _not_required(h)}
        for key in sorted(required ^ set(sdk_required)):
            state = "required" if key in required else "optional"
            self.fail(f"{name}.{key}", f"{state} in the contract, not in the SDK")
        for key in sorted(set(props) & set(hints)):
            self.check(props[key], hints[key], f"{name}.{key}")


def _not_required(hint: object) -> bool:
    origin: object = typing_extensions.get_origin(hint)
    return origin is NotRequired


def test_every_component_has_its_wire_type_with_the_same_fields() -> None:
    checker = Checker()
    for name, schema in SCHEMAS.items():
        tp = getattr(_wire, name, None)
        if tp is None:
            checker.fail(name, "a component of openapi.json without a type in dynatask._wire")
            continue
        if schema.get("type") == "object" and "properties" in schema:
            checker.typed_dict(name, schema, tp)
        else:
            checker.check(schema, tp, name)
    defined = {
        n for n, v in vars(_wire).items() if is_typeddict(v) and v.__module__ == _wire.__name__
    }
    for stale in sorted(defined - checker.seen):
        checker.fail(stale, "a wire type that no component of openapi.json describes")
    assert not checker.problems, "the SDK does not follow openapi.json:\n" + "\n".join(
        checker.problems
    )


def _route(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_route_the_sdk_calls_is_in_the_contract() -> None:
    contract: set[tuple[str, str]] = set()
    for path, item in DOC["paths"].items():
        for method in item:
            contract.add((method.upper(), _route(path)))
    calls: set[tuple[str, str]] = set()
    pattern = re.compile(r"""\(\s*"(GET|POST|PUT|DELETE)",\s*f?"(/v1/[^"]*)\"""")
    for file in SRC.glob("*.py"):
        for method, path in pattern.findall(file.read_text()):
            calls.add((method, _route(path)))
    assert calls, "no call of the SDK found"
    missing = sorted(c for c in calls if c not in contract)
    assert not missing, f"routes the SDK calls that openapi.json does not have: {missing}"


@pytest.mark.parametrize(
    ("component", "field"),
    [("JobInfo", "counts"), ("ClaimedTask", "token"), ("SpawnOptions", "key")],
)
def test_the_checker_sees_a_change_of_the_contract(component: str, field: str) -> None:
    """Mutating the contract in memory makes the check fail (the test is not vacuous)."""
    original = SCHEMAS[component]
    try:
        changed = json.loads(json.dumps(original))
        changed["properties"][field + "Renamed"] = changed["properties"].pop(field)
        SCHEMAS[component] = changed
        checker = Checker()
        checker.typed_dict(component, changed, getattr(_wire, component))
        assert any(field in p for p in checker.problems)
    finally:
        SCHEMAS[component] = original
