"""Writes src/dynatask/_wire.py (TypedDicts of the HTTP API) from the repository's openapi.json.

    python sdk/python/scripts/gen_wire.py && ruff format sdk/python/src/dynatask/_wire.py

tests/test_contract.py compares the module with openapi.json, field by field: a change of the
contract fails it until the module (and the code reading it) follows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
OUT = HERE.parent / "src" / "dynatask" / "_wire.py"

HEADER = '''"""Wire types of the dynatask HTTP API: one TypedDict per component of openapi.json.

Written by scripts/gen_wire.py from the repository's openapi.json; tests/test_contract.py
checks every field (name, type, required or not) against the document, so the SDK cannot
drift from the contract unnoticed. Field names are the wire's (camelCase); the public API
converts them to Python names.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from typing_extensions import NotRequired, TypedDict

'''


def singular(name: str) -> str:
    if name == "children":
        return "Child"
    base = name[:-1] if name.endswith("s") else name
    return base[0].upper() + base[1:]


def cap(name: str) -> str:
    return name[0].upper() + name[1:]


class Gen:
    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas
        self.classes: list[str] = []
        self.aliases: list[str] = []

    def type_of(self, s: dict[str, Any], hint: str) -> str:
        if "$ref" in s:
            return str(s["$ref"]).rsplit("/", 1)[-1]
        if "anyOf" in s:
            parts = [self.type_of(m, hint) for m in s["anyOf"]]
            return " | ".join(parts)
        if "enum" in s:
            return (
                "Literal["
                + ", ".join(json.dumps(v) if not isinstance(v, bool) else str(v) for v in s["enum"])
                + "]"
            )
        t = s.get("type")
        if t == "null":
            return "None"
        if t == "string":
            return "str"
        if t == "integer":
            return "int"
        if t == "number":
            return "float"
        if t == "boolean":
            return "bool"
        if t == "array":
            return f"list[{self.type_of(s['items'], singular(hint))}]"
        if t == "object":
            if "properties" in s:
                self.typed_dict(hint, s)
                return hint
            return "dict[str, Any]"
        return "Any"

    def typed_dict(self, name: str, s: dict[str, Any]) -> None:
        required = set(s.get("required", []))
        lines = [f"class {name}(TypedDict):"]
        doc = s.get("description")
        if doc:
            lines.append(f'    """{doc}"""')
            lines.append("")
        for prop, ps in s["properties"].items():
            t = self.type_of(ps, name + cap(prop))
            lines.append(f"    {prop}: {t if prop in required else f'NotRequired[{t}]'}")
        self.classes.append("\n".join(lines))

    def run(self) -> str:
        for name, s in self.schemas.items():
            if s.get("type") == "object" and "properties" in s:
                self.typed_dict(name, s)
            else:
                self.aliases.append(f"{name}: TypeAlias = {self.type_of(s, name)}")
        return (
            HEADER
            + "\n\n"
            + "\n\n\n".join(self.classes)
            + "\n\n\n"
            + "\n".join(self.aliases)
            + "\n"
        )


def main() -> None:
    doc = json.loads((ROOT / "openapi.json").read_text())
    OUT.write_text(Gen(doc["components"]["schemas"]).run())
    sys.stdout.write(f"wrote {OUT}\n")


if __name__ == "__main__":
    main()
