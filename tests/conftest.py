"""Fixtures for every suite."""

from __future__ import annotations

import pytest

from tests.transports import CLIENTS


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """The HTTP transport (`http.client`): each test that asks for it runs once per transport."""
    return str(request.param)
