"""The one place that knows topic names (ARCHITECTURE.md, "Kafka topics")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    @property
    def frames(self) -> str:
        return f"{self.prefix}ocpp.frames"

    @property
    def commands(self) -> str:
        return f"{self.prefix}ocpp.commands"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}ocpp.deadletter"

    @property
    def state(self) -> str:
        return f"{self.prefix}twin.state"

    @property
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
