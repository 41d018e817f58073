"""A small OpenADR 3 client (VEN side) on aiohttp: the OAuth2 client-credentials token,
programs, events, reports and subscriptions, each answer checked before it is believed.

Written here rather than taken from PyPI: ``toadr3`` (0.29) models only the 3.0 shapes
(targets as valuesMaps, so a 3.1 GAC event's EAN strings fail its pydantic models) and
parses a whole list at once, so one bad event would hide the good ones; ElaadNL's
``openadr3-client`` needs Python >= 3.12 (we run 3.11) and is synchronous (requests). This
client returns the JSON as it came and leaves judging each event to
:mod:`twin.grid.openadr`, so a bad event is recorded as rejected, never lost with its
neighbours. aiohttp is already here (faust's web server).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

PAGE = 50
"""The spec's largest ``limit``."""


class VtnError(Exception):
    """The VTN could not be heard: ``kind`` is one of ``unreachable``, ``timeout``,
    ``unauthorized``, ``forbidden``, ``server``, ``not-json``, ``schema``, ``client``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class VtnClient:
    def __init__(self, vtn: str, client_id: str, client_secret: str, timeout_s: float = 10.0,
                 session: aiohttp.ClientSession | None = None) -> None:  # fmt: skip
        self.vtn = vtn.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._token: tuple[str, float] | None = None  # (token, monotonic expiry)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self.session.request(method, url, **kwargs) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            raise VtnError("timeout", f"{method} {url}: no answer in {self.timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise VtnError("unreachable", f"{method} {url}: {exc}") from None
        if status >= 500:
            raise VtnError("server", f"{method} {url}: HTTP {status} {text[:200]}")
        if status == 401:
            raise VtnError("unauthorized", f"{method} {url}: HTTP 401 {text[:200]}")
        if status == 403:
            raise VtnError("forbidden", f"{method} {url}: HTTP 403 {text[:200]}")
        if status == 204 or not text:
            return status, None
        try:
            import orjson

            body = orjson.loads(text)
        except ValueError:
            raise VtnError("not-json", f"{method} {url}: HTTP {status}, not JSON: {text[:120]!r}") from None
        if status >= 400:
            raise VtnError("client", f"{method} {url}: HTTP {status} {str(body)[:200]}")
        return status, body

    async def token(self) -> str:
        """A bearer token (client credentials), fetched again when it expires or is refused."""
        if self._token and self._token[1] > time.monotonic():
            return self._token[0]
        token_url = f"{self.vtn}/auth/token"
        try:
            _, info = await self._call("GET", f"{self.vtn}/auth/server")
            if isinstance(info, dict) and isinstance(info.get("tokenURL"), str):
                token_url = info["tokenURL"]
        except VtnError as exc:
            if exc.kind in ("unreachable", "timeout"):
                raise
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret}
        try:
            _, body = await self._call("POST", token_url, data=form)
        except VtnError as exc:
            if exc.kind == "client":  # 400 invalid_client and friends
                raise VtnError("unauthorized", f"token refused: {exc}") from None
            raise
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise VtnError("schema", f"POST {token_url}: no access_token in the answer")
        expires = body.get("expires_in")
        lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else 3600.0
        self._token = (body["access_token"], time.monotonic() + max(1.0, lifetime * 0.9))
        return self._token[0]

    async def _authorised(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call with the token; a 401 fetches a new token and tries once more."""
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {await self.token()}"}
            try:
                return (await self._call(method, f"{self.vtn}{path}", headers=headers, **kwargs))[1]
            except VtnError as exc:
                if exc.kind != "unauthorized" or attempt == 2:
                    raise
                self._token = None
        raise AssertionError("unreachable")

    async def _list(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        out: list[Any] = []
        skip = 0
        while True:
            page = await self._authorised("GET", path, params={**(params or {}), "skip": skip, "limit": PAGE})
            if not isinstance(page, list):
                raise VtnError("schema", f"GET {path}: a JSON array expected, got {type(page).__name__}")
            out += page
            if len(page) < PAGE:
                return out
            skip += PAGE

    async def programs(self) -> list[Any]:
        return await self._list("/programs")

    async def events(self) -> list[Any]:
        return await self._list("/events")

    async def report(self, report: dict[str, Any]) -> Any:
        return await self._authorised("POST", "/reports", json=report)

    async def subscribe(self, client_name: str, callback_url: str, bearer: str | None = None) -> Any:
        """Ask to be called back on events created, updated or deleted."""
        operation: dict[str, Any] = {"objects": ["EVENT", "PROGRAM"], "operations": ["CREATE", "UPDATE", "DELETE"],
                                     "callbackUrl": callback_url}  # fmt: skip
        if bearer:
            operation["bearerToken"] = bearer
        return await self._authorised("POST", "/subscriptions",
                                      json={"clientName": client_name, "objectOperations": [operation]})  # fmt: skip


async def backoff(failures: int, poll_s: float, cap_s: float = 300.0) -> None:
    """Wait longer after each failure in a row: poll_s, 2x, 4x, ... up to ``cap_s``."""
    await asyncio.sleep(min(cap_s, poll_s * 2 ** max(0, failures - 1)))
