"""Reading a capture: duplicates dropped however they come, blank lines skipped, a line that
is not JSON named."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from twin import captures, envelope


def _record(conn_id: str, seq: int) -> dict[str, object]:
    return envelope.lifecycle("Connected", {}, station_id="CS-1", protocol="ocpp2.0.1", conn_id=conn_id, seq=seq,
                              ts="2026-03-02T00:00:00.000Z")  # fmt: skip


def test_seen_agrees_with_a_set_of_every_pair() -> None:
    """In order, out of order, repeated, across connections: first exactly once."""
    rng = random.Random(23)
    for _ in range(2000):
        conns = ["a", "b", "c"][: rng.randint(1, 3)]
        pairs = [(rng.choice(conns), rng.randint(1, 30)) for _ in range(rng.randint(1, 80))]
        if rng.random() < 0.5:
            pairs.sort(key=lambda pair: pair[1])  # mostly in order, as a gateway writes them
        seen, every = captures.Seen(), set()
        for pair in pairs:
            assert seen.first(*pair) == (pair not in every), pairs
            every.add(pair)


def test_read_drops_duplicates_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    lines = [envelope.dumps(_record("c1", seq)) for seq in (1, 2, 4, 3, 2, 4, 5)]
    path.write_bytes(b"\n".join(lines[:3]) + b"\n\n   \n" + b"\n".join(lines[3:]) + b"\n")
    assert [r["seq"] for r in captures.read(path)] == [1, 2, 4, 3, 5]
    assert [r["seq"] for r in captures.read(path, dedupe=False)] == [1, 2, 4, 3, 2, 4, 5]


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(envelope.dumps(_record("c1", 1)) + b"\n{not json\n")
    with pytest.raises(captures.CaptureError, match=r"c.jsonl:2: not JSON"):
        list(captures.read(path))
