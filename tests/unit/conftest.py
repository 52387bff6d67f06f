"""The fast layer: the API and the core over an in-process schedd (fakecondor), no pool."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from condor_cloud.api.app import create_app
from condor_cloud.api.auth import Credentials
from condor_cloud.cloud import Cloud
from condor_cloud.profiles import parse_profiles
from condor_cloud.settings import Settings
from fakecondor import FakeCollector, FakeSchedd, machine

USERS = "# the tests' users\nadmin:adminpw admin\nalice:alicepw\nbob:bobpw\n"
XML = {"Accept": "application/xml"}
JSON = {"Accept": "application/json"}


@pytest.fixture
def shared_images(tmp_path: Path) -> Path:
    shared = tmp_path / "shared_images"
    (shared / "staging").mkdir(parents=True)
    with open(shared / "tiny.img", "wb") as f:
        f.truncate(32 << 20)
    return shared


@pytest.fixture
def schedd() -> FakeSchedd:
    return FakeSchedd()


@pytest.fixture
def collector() -> FakeCollector:
    return FakeCollector([machine("node1.cloud.testbed", cached=("tiny.img",))])


@pytest.fixture
def cloud(shared_images: Path, schedd: FakeSchedd, collector: FakeCollector, tmp_path: Path) -> Cloud:
    settings = Settings(shared_images=shared_images, state=tmp_path / "state", queue_state=tmp_path / "queue")
    return Cloud(settings, parse_profiles(settings.hardware_profiles), lambda: schedd, lambda: collector, ttl=0)


@pytest.fixture
def credentials() -> Credentials:
    return Credentials.parse(USERS)


@pytest.fixture
def app(cloud: Cloud, credentials: Credentials):
    return create_app(cloud, credentials, timeout=5)


def client(app, user: str | None = None, **kwargs):
    from starlette.testclient import TestClient
    c = TestClient(app, raise_server_exceptions=False, follow_redirects=False, **kwargs)
    if user:
        c.auth = (user, f"{user}pw")
    return c


@pytest.fixture
def anonymous(app):
    return client(app)


@pytest.fixture
def alice(app):
    return client(app, "alice")


@pytest.fixture
def bob(app):
    return client(app, "bob")


@pytest.fixture
def admin(app):
    return client(app, "admin")


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A command line run with umask 077: files must get their modes from the code, not from it."""
    old = os.umask(0o077)
    yield
    os.umask(old)
