"""The outcome of a settled task, as a durable wait returns it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Outcome", "OutcomeState"]

OutcomeState = Literal["succeeded", "failed", "cancelled", "skipped"]


@dataclass(frozen=True)
class Outcome:
    """A settled task: ``result`` when it succeeded, else ``error`` (``{name, message, ...}``)."""

    task_id: str
    state: OutcomeState
    result: Any = None
    error: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        """Whether the task succeeded."""
        return self.state == "succeeded"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Outcome:
        """An outcome from the server's ``Outcome`` (``{taskId, state, result | error}``)."""
        error = data.get("error")
        return cls(
            task_id=str(data["taskId"]),
            state=data["state"],
            result=data.get("result"),
            error=dict(error) if isinstance(error, Mapping) else None,
        )
