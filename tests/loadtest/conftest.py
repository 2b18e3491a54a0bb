"""Fixtures for the load and probe tests: minimal fixed-answer servers in child processes."""

from __future__ import annotations

import pytest

from loadtest.echo import EchoProcess, Faults


@pytest.fixture(scope="module")
def echo():
    """A fault-free fixed-answer server (gRPC and REST) on 127.0.0.1."""
    with EchoProcess() as server:
        yield server


@pytest.fixture
def echo_with():
    """Factory: start a fixed-answer server with the given Faults (stopped after the test)."""
    started: list[EchoProcess] = []

    def start(**faults) -> EchoProcess:
        server = EchoProcess(Faults(**faults))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
