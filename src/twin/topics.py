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

    @cached_property
    def signals(self) -> str:
        """Grid signals (OpenADR events, an operator's limits), every version received."""
        return f"{self.prefix}grid.signals"

    @cached_property
    def plans(self) -> str:
        """The controller's last plan per site (key: site id), with why: what it decided."""
        return f"{self.prefix}control.plans"

    @cached_property
    def connections(self) -> str:
        """Which gateway holds each station's connection (key: station id; a tombstone when
        it closes): how a command finds its gateway when gateways scale out."""
        return f"{self.prefix}gateway.connections"

    def specs(self) -> list[TopicSpec]:
        return [
            TopicSpec(self.frames),
            TopicSpec(self.commands),
            TopicSpec(self.deadletter),
            TopicSpec(self.state, compacted=True),
            TopicSpec(self.alerts),
            TopicSpec(self.signals),
            TopicSpec(self.plans, compacted=True),
            TopicSpec(self.connections, compacted=True),
        ]
