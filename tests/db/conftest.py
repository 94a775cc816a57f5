"""Fixtures of the database tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from db.session import session_factory


@pytest.fixture
def lite(sqlite_url: str) -> Iterator[Session]:
    """A session on SQLite only, for tests whose database is not the subject."""
    with session_factory(sqlite_url)() as s:
        yield s
