"""The local host's webhook attempts (DESIGN §11): one aiohttp session, 10 s per attempt.

An attempt never follows a redirect (a 3xx is a failed attempt: a redirect could lead to a
private address) and reads at most a little of the answer. Unless private targets are
allowed, the URL is checked again (``worker.webhooks.target_problem``) and a name is resolved
through ``PublicOnlyResolver``, which drops every address that is not public — the connection
is made to an address that was checked, so a name that resolves to 127.0.0.1, or re-resolves
there after the check (DNS rebinding), reaches nothing. Not uploaded to Cloudflare (its
``fetch`` lives in ``worker/entry.py``); excluded in scripts/stage-worker.mjs.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from worker import webhooks

# How much of an answer is read: the status is what counts.
MAX_ANSWER_BYTES = 4096


class PublicOnlyResolver(AbstractResolver):
    """A resolver that answers only public addresses (``worker.webhooks.address_problem``)."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        public = [a for a in answers if webhooks.address_problem(ipaddress.ip_address(a["host"])) is None]
        if not public:
            refused = ", ".join(sorted({str(a["host"]) for a in answers}))
            raise OSError(f"{host} resolves only to refused (private or local) addresses: {refused}")
        return public

    async def close(self) -> None:
        await self._inner.close()


class WebhookSender:
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = None if self.allow_private else PublicOnlyResolver()
            connector = aiohttp.TCPConnector(resolver=resolver, limit=64, force_close=True)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def send(self, send: dict[str, Any]) -> dict[str, Any]:
        """One attempt → ``{event_id, subscription_id, status (None: no answer), error}``."""
        result: dict[str, Any] = {"event_id": send["event_id"], "subscription_id": send["subscription_id"]}
        problem = webhooks.target_problem(send["url"], self.allow_private)
        if problem is not None:
            return dict(result, status=None, error=f"target refused: {problem}")
        timeout = aiohttp.ClientTimeout(total=webhooks.ATTEMPT_TIMEOUT_MS / 1000)
        try:
            async with self._client().post(
                send["url"],
                data=str(send["body"]).encode(),
                headers=send["headers"],
                allow_redirects=False,
                timeout=timeout,
            ) as answer:
                await answer.content.read(MAX_ANSWER_BYTES)
                status = answer.status
        except TimeoutError:
            return dict(result, status=None, error=f"no answer within {webhooks.ATTEMPT_TIMEOUT_MS // 1000} s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return dict(result, status=None, error=f"{type(exc).__name__}: {exc}"[: webhooks.MAX_ERROR_CHARS])
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return dict(result, status=status, error=error)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


__all__ = ["PublicOnlyResolver", "WebhookSender"]
