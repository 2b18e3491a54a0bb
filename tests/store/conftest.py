"""Fixtures for the store tests: one real PostgreSQL cluster per test session, a fresh database per test."""

from __future__ import annotations

import itertools

import pytest

from tests.store.postgres import running_postgres

_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (tests/store/postgres.py), stopped at the end of the session."""
    pytest.importorskip("psycopg")
    with running_postgres() as pg:
        yield pg


@pytest.fixture
def postgres_url(postgres):
    """The URL of a new, empty database of the session's cluster."""
    return postgres.create_database(f"t{next(_names)}")
