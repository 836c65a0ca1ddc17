"""Programs the suite needs on the machine. A missing one fails the test that needs it, with
how to install it: a skip would pass CI quietly without the test ever having run."""

from __future__ import annotations

import shutil

import pytest

# `.ci/run` installs these where missing; deploy/local/redis installs redis-server.
INSTALL = {
    "openssl": "apt-get install openssl",
    "redis-server": "apt-get install redis-server (deploy/local/redis does)",
    "chromium": "apt-get install chromium (.ci/run does)",
}


def tool(name: str) -> str:
    """The path of program `name`; fails the calling test when it is not installed."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL.get(name, 'install it')}", pytrace=False)
    return found
