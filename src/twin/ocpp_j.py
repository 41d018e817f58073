"""OCPP-J framing: the five message types of OCPP 2.1 as data, decoded and encoded.

The ``ocpp`` package frames only types 2-4; OCPP 2.1 adds CALLRESULTERROR (5, the answer
to a CALLRESULT that failed validation) and SEND (6, never answered). Everything that can
go wrong while reading a frame raises :class:`FrameError` carrying the OCPP-J error code
to answer with, and whatever could still be read (message id, type, action).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import orjson

SUBPROTOCOLS = ("ocpp2.1", "ocpp2.0.1")
"""What the gateway speaks, preferred first."""

UNREADABLE_ID = "-1"
"""OCPP-J: the message id to answer with when the id itself cannot be read."""

MAX_ID_LENGTH = 36


class MessageType(IntEnum):
    CALL = 2
    CALLRESULT = 3
    CALLERROR = 4
    CALLRESULTERROR = 5
    SEND = 6


TYPES_OF: dict[str, frozenset[int]] = {
    "ocpp2.1": frozenset({2, 3, 4, 5, 6}),
    "ocpp2.0.1": frozenset({2, 3, 4}),
}

CALL, CALLRESULT, SEND = MessageType.CALL, MessageType.CALLRESULT, MessageType.SEND
"""The members a frame's path tests, as module globals: reading a member off its class is a
descriptor call in Python 3.11 (about 0.1 µs), and a CALL and its answer read several."""
_CALL_OR_SEND = frozenset({CALL, SEND})


@dataclass(slots=True)
class Frame:
    msg_type: int
    msg_id: str
    action: str | None = None
    """The action: given for CALL and SEND, resolved from the CALL for the answers."""
    payload: dict[str, Any] = field(default_factory=dict)
    """For CALLERROR and CALLRESULTERROR: ``{"errorCode", "errorDescription", "errorDetails"}``."""


class FrameError(Exception):
    """A frame that is not well-formed OCPP-J; ``code`` is the OCPP-J error code to answer with."""

    def __init__(
        self,
        code: str,
        description: str,
        msg_id: str | None = None,
        msg_type: int | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(description)
        self.code, self.description = code, description
        self.msg_id, self.msg_type, self.action = msg_id, msg_type, action

    @property
    def answer_id(self) -> str:
        return self.msg_id if self.msg_id is not None else UNREADABLE_ID


def decode(text: str | bytes, protocol: str = "ocpp2.1") -> Frame:
    """Read one OCPP-J frame; raises :class:`FrameError` with the code to answer with."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError("RpcFrameworkError", f"frame is not JSON: {exc}") from None
    if not isinstance(message, list) or len(message) < 3:
        raise FrameError("RpcFrameworkError", "frame is not an OCPP-J array [type, id, ...]")
    kind, msg_id = message[0], message[1]
    if not isinstance(msg_id, str) or not msg_id or len(msg_id) > MAX_ID_LENGTH:
        raise FrameError("RpcFrameworkError", f"message id must be a string of 1-{MAX_ID_LENGTH}")
    if type(kind) is not int:
        raise FrameError("RpcFrameworkError", "message type must be an integer", msg_id)
    kinds = TYPES_OF.get(protocol)
    if kind not in (TYPES_OF["ocpp2.1"] if kinds is None else kinds):
        raise FrameError("MessageTypeNotSupported", f"message type {kind} is not part of {protocol}", msg_id)
    if kind in _CALL_OR_SEND:
        if len(message) != 4:
            raise FrameError("RpcFrameworkError", "a CALL is [2, id, action, payload]", msg_id, kind)
        action, payload = message[2], message[3]
        if not isinstance(action, str) or not action:
            raise FrameError("RpcFrameworkError", "action must be a non-empty string", msg_id, kind)
        if not isinstance(payload, dict):
            raise FrameError("FormatViolation", "payload must be a JSON object", msg_id, kind, action)
        return Frame(kind, msg_id, action, payload)
    if kind == CALLRESULT:
        if len(message) != 3:
            raise FrameError("RpcFrameworkError", "a CALLRESULT is [3, id, payload]", msg_id, kind)
        if not isinstance(message[2], dict):
            raise FrameError("FormatViolation", "payload must be a JSON object", msg_id, kind)
        return Frame(kind, msg_id, None, message[2])
    # CALLERROR / CALLRESULTERROR: [t, id, code, description, details]
    if len(message) != 5:
        raise FrameError("RpcFrameworkError", f"type {kind} is [t, id, code, text, details]", msg_id, kind)
    code, description, details = message[2], message[3], message[4]
    if not isinstance(code, str) or not isinstance(description, str) or not isinstance(details, dict):
        raise FrameError("FormatViolation", "error code, description and details mistyped", msg_id, kind)
    return Frame(
        kind,
        msg_id,
        None,
        {"errorCode": code, "errorDescription": description, "errorDetails": details},
    )


def encode(frame: Frame) -> str:
    """The OCPP-J text of a frame."""
    t = frame.msg_type
    if t in _CALL_OR_SEND:
        message: list[Any] = [t, frame.msg_id, frame.action, frame.payload]
    elif t == CALLRESULT:
        message = [t, frame.msg_id, frame.payload]
    else:
        p = frame.payload
        message = [t, frame.msg_id, p["errorCode"], p.get("errorDescription", ""), p.get("errorDetails") or {}]
    return orjson.dumps(message).decode()


def call(msg_id: str, action: str, payload: dict[str, Any]) -> Frame:
    return Frame(CALL, msg_id, action, payload)


def result(msg_id: str, action: str | None, payload: dict[str, Any]) -> Frame:
    return Frame(CALLRESULT, msg_id, action, payload)


def error(
    msg_id: str,
    code: str,
    description: str,
    action: str | None = None,
    *,
    to_result: bool = False,
    details: dict[str, Any] | None = None,
) -> Frame:
    """A CALLERROR, or with ``to_result`` a CALLRESULTERROR (the answer to a bad CALLRESULT)."""
    kind = MessageType.CALLRESULTERROR if to_result else MessageType.CALLERROR
    return Frame(
        kind,
        msg_id,
        action,
        {"errorCode": code, "errorDescription": description[:255], "errorDetails": details or {}},
    )
