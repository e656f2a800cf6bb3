"""Repeated rejections written as one event and a count, so that an outsider cannot flood the audit log.

Every request with a junk token or a failed login is a security event. One
chained row each would let anyone grow the append-only log without bound
and queue every commit on its chain's lock. So, per source (a client
address; an IPv6 one by its /64), action, reason and chain (tenant or none),
the first rejection of a window is written at once, as before, and the
others of that window are counted in memory and written as one more event
when the window ends: the same action and reason, ``data.repeated`` the
count, ``data.samples`` up to ten of the differing details (the tenants a
forged token claimed, the e-mails tried), ``data.window_started`` and
``data.window_seconds``. At most two rows per source, action, reason and
chain per window; every rejection is still counted.

The counts live in the process until their window ends (a daemon timer
writes them; so do interpreter exit and the Flask extension's
``dispose()``): a process killed in between loses at most one window's
count, never the first event. A count the timer cannot write (the database
down, or dropped under a test) is logged instead, on
``rls_tenancy.audit.rejections``, with what it counted. Each process counts on
its own. Past :data:`MAX_SOURCES` open windows (many sources at once), a
rejection from a new source is written at once, as without aggregation.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import ipaddress
import json
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from rls_tenancy.audit.events import current_origin, log_security_event

_log = logging.getLogger(__name__)

#: The default window, in seconds: rows per source per minute stay bounded.
WINDOW = 60.0
#: Open windows kept at once; more sources than this are written event by event.
MAX_SOURCES = 10_000
#: Differing details kept per window.
MAX_SAMPLES = 10

_Key = tuple[str, int | None, str, str]  # action, tenant, source, reason


@dataclass
class _Window:
    message: str | None
    ip: str | None
    started: float  # wall clock, for the event
    ends: float  # monotonic
    seconds: float
    repeated: int = 0
    samples: list[str] = field(default_factory=list)


class RejectionLog:
    """The rejections written through one engine; see the module docs."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._open: dict[_Key, _Window] = {}
        self._timer: threading.Timer | None = None
        self._next_sweep = 0.0

    def record(
        self,
        action: str,
        message: str | None,
        *,
        tenant_id: int | None,
        reason: str,
        data: Mapping[str, Any],
        window: float = WINDOW,
    ) -> None:
        """Write this rejection, or count it in its source's open window."""
        ip = current_origin().ip
        if window <= 0:
            self._write(action, message, tenant_id, data, ip)
            return
        key: _Key = (action, tenant_id, _source(ip), reason)
        now = time.monotonic()
        with self._lock:
            opened = self._open.get(key)
            if opened is not None and now < opened.ends:
                opened.repeated += 1
                if len(opened.samples) < MAX_SAMPLES:
                    sample = json.dumps(dict(data), sort_keys=True, default=str)
                    if sample not in opened.samples:
                        opened.samples.append(sample)
                if opened.repeated == 1:  # its first count: the timer must write it (once running, it re-arms)
                    self._schedule(opened.ends - now)
                return
            due: list[tuple[_Key, _Window]] = []
            if opened is not None:  # its window has ended: its count goes out now, and it opens anew
                del self._open[key]
                if opened.repeated:
                    due.append((key, opened))
            if now >= self._next_sweep:  # the other ended windows, at most once a second (not per request)
                due += self._take_due(now)
                self._next_sweep = now + 1.0
            kept = len(self._open) < MAX_SOURCES  # else no room: written below, not counted
            if kept:
                self._open[key] = _Window(message, ip, time.time(), now + window, window)
        self._write_counts(due)
        self._write(action, message, tenant_id, {**data, "window_seconds": window} if kept else data, ip)

    def flush(self) -> None:
        """Write every open window's count now (tests, shutdown)."""
        with self._lock:
            due = self._take_due(float("inf"))
        self._write_counts(due)

    def _take_due(self, now: float) -> list[tuple[_Key, _Window]]:
        due = [(key, opened) for key, opened in self._open.items() if opened.ends <= now]
        for key, _ in due:
            del self._open[key]
        return [(key, opened) for key, opened in due if opened.repeated]

    def _schedule(self, delay: float) -> None:
        if self._timer is None or not self._timer.is_alive():
            self._timer = threading.Timer(max(delay, 0.0) + 0.05, self._on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _on_timer(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = self._take_due(now)
            pending = [opened.ends - now for opened in self._open.values() if opened.repeated]
            self._timer = None
            if pending:
                self._schedule(min(pending))
        try:
            self._write_counts(due)
        except Exception:  # noqa: BLE001 - a thread of its own: nothing above it would see the error
            counted = [(action, tenant, reason, opened.repeated) for (action, tenant, _, reason), opened in due]
            _log.warning("rejection counts not written (action, tenant, reason, count): %s", counted, exc_info=True)

    def _write_counts(self, due: list[tuple[_Key, _Window]]) -> None:
        for (action, tenant_id, _, reason), opened in due:
            started = datetime.datetime.fromtimestamp(opened.started, datetime.UTC)
            data = {
                "reason": reason,
                "repeated": opened.repeated,
                "samples": [json.loads(sample) for sample in opened.samples],
                "window_started": started.isoformat(),
                "window_seconds": opened.seconds,
            }
            message = f"{opened.repeated} more in {opened.seconds:g} s: {opened.message or reason}"
            self._write(action, message[:1000], tenant_id, data, opened.ip)

    def _write(
        self, action: str, message: str | None, tenant_id: int | None, data: Mapping[str, Any], ip: str | None
    ) -> None:
        log_security_event(self._engine, action, message, tenant_id=tenant_id, data=data, ip=ip)


@functools.lru_cache(maxsize=1024)
def _source(ip: str | None) -> str:
    """The client a rejection is counted against: its address, or its /64 for IPv6."""
    if ip is None:
        return ""
    address = ipaddress.ip_address(ip)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return ip


_LOGS: weakref.WeakKeyDictionary[Engine, RejectionLog] = weakref.WeakKeyDictionary()
_LOGS_LOCK = threading.Lock()


def flush_rejections(engine: Engine) -> None:
    """Write ``engine``'s open windows' counts now, if it has any: before it or its database goes away."""
    with _LOGS_LOCK:
        found = _LOGS.get(engine)
    if found is not None:
        found.flush()


def rejection_log(engine: Engine) -> RejectionLog:
    """The :class:`RejectionLog` of ``engine``, one per engine and process."""
    with _LOGS_LOCK:
        found = _LOGS.get(engine)
        if found is None:
            found = _LOGS[engine] = RejectionLog(engine)
        return found


@atexit.register
def _flush_all() -> None:
    for log in list(_LOGS.values()):
        try:
            log.flush()
        except Exception:  # noqa: BLE001, S110 - the database may be gone at exit; nothing to report to
            pass
