"""Caisey endpoint agent (DESIGN §6): holds prompts durably, shows them, reports what happened.

Modules, one concept each:

- ``store``       — SQLite state (WAL, synchronous=FULL) and the 0600 secrets file
- ``core``        — ``AgentCore``: the runtime's protocol logic, sans I/O, time as an input
- ``connection``  — asyncio + aiohttp host: WebSocket, timers, reconnect with backoff
- ``presenters``  — how a prompt reaches a person: tk, terminal, exec:PROGRAM, auto
- ``tk_dialog``   — the tk dialog program the ``tk`` presenter runs in a child process
- ``cli``         — ``caisey-agent enroll | run | status``
"""
