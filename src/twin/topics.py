"""The one place that knows topic names (ARCHITECTURE.md, "Kafka topics")."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    @cached_property
    def frames(self) -> str:
        return f"{self.prefix}ocpp.frames"

    @cached_property
    def commands(self) -> str:
        return f"{self.prefix}ocpp.commands"

    @cached_property
    def deadletter(self) -> str:
        return f"{self.prefix}ocpp.deadletter"

    @cached_property
    def state(self) -> str:
        return f"{self.prefix}twin.state"

    @cached_property
    def alerts(self) -> str:
        return f"{self.prefix}twin.alerts"

    def specs(self) -> list[TopicSpec]:
        return [
            TopicSpec(self.frames),
            TopicSpec(self.commands),
            TopicSpec(self.deadletter),
            TopicSpec(self.state, compacted=True),
            TopicSpec(self.alerts),
        ]
