"""Named leases in the database, so two workers never run the same sweep at once."""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Lease, utcnow


class LeaseHeld(RuntimeError):
    """Another process holds the lease; this run should skip, not wait."""


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(session: Session, name: str, holder: str, ttl: dt.timedelta) -> bool:
    """Take the lease if it is free or expired; True when this holder has it."""
    now = utcnow()
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Lease).where(Lease.name == name, Lease.expires_at < now)
        .values(holder=holder, expires_at=now + ttl)
    )
    taken = result.rowcount
    if taken:
        return True
    try:
        with session.begin_nested():
            session.add(Lease(name=name, holder=holder, expires_at=now + ttl))
        return True
    except IntegrityError:
        return False


@contextmanager
def lease(factory: sessionmaker[Session], name: str,
          ttl: dt.timedelta = dt.timedelta(minutes=15)) -> Iterator[str]:
    """Hold `name` for the block; raise LeaseHeld if someone else has it."""
    holder = _holder()
    with factory.begin() as session:
        if not acquire(session, name, holder, ttl):
            raise LeaseHeld(f"{name} is already running elsewhere")
    try:
        yield holder
    finally:
        _release(factory, name, holder)


def _release(factory: sessionmaker[Session], name: str, holder: str, attempts: int = 5) -> None:
    """Free the lease; a briefly locked database is retried, and the TTL is the last resort."""
    for attempt in range(attempts):
        try:
            with factory.begin() as session:
                session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
