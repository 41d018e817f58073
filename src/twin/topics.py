"""The one place that knows topic names (ARCHITECTURE.md, "Kafka topics")."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    kept: bool = False  # never deleted by age: what is read back whole to decide (not just archived)

    def configs(self) -> dict[str, str]:
        """The topic's configuration at creation: compacted keeps each key's last record; kept
        keeps every record (``retention.ms=-1``) where the broker would drop them after its
        default retention (7 days on Apache Kafka)."""
        configs = {"cleanup.policy": "compact"} if self.compacted else {}
        return configs | ({"retention.ms": "-1"} if self.kept else {})


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
            # the limit in force and the VEN's memory are functions of every signal received
            TopicSpec(self.signals, kept=True),
            TopicSpec(self.plans, compacted=True),
            TopicSpec(self.connections, compacted=True),
        ]
