from __future__ import annotations

import os

import pytest

# Unit tests import the condor bindings without a pool; the testbed fixture
# points them at the testbed's client configuration.
os.environ.setdefault("CONDOR_CONFIG", "/dev/null")

from harness import Testbed, wait_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Teardown tests stop the testbed, so they run after everything else."""
    items.sort(key=lambda item: item.get_closest_marker("teardown") is not None)


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """The running testbed (brought up once per session); this process joins its client network."""
    tb = Testbed.up()
    tb.enter_client_network()
    os.environ["CONDOR_CONFIG"] = tb.condor_config
    import htcondor2
    htcondor2.reload_config()
    return tb


@pytest.fixture(scope="session")
def collector(testbed: Testbed):
    import htcondor2
    return htcondor2.Collector()


class FreshSchedd:
    """The master's schedd, located anew for every call: tests restart it, and a
    restarted schedd has a new address and knows none of our security sessions."""

    def __init__(self, collector, name: str):
        self._collector, self._name = collector, name

    def __getattr__(self, attr: str):
        import htcondor2

        def located():  # None while a restarted schedd (or collector) is not back yet
            try:
                return self._collector.locate(htcondor2.DaemonType.Schedd, self._name)
            except htcondor2.HTCondorException:
                return None

        def schedd():
            return htcondor2.Schedd(wait_for(located, 60, f"the schedd {self._name} to be advertised"))

        def call(*args, **kwargs):
            try:
                return getattr(schedd(), attr)(*args, **kwargs)
            except htcondor2.HTCondorException as e:
                if "rejected our session id" not in str(e):
                    raise
                # A restarted schedd does not know our security session; condor has now dropped it.
                return getattr(schedd(), attr)(*args, **kwargs)
        return call


@pytest.fixture(scope="session")
def schedd(testbed: Testbed, collector):
    """The master's schedd: the queue every instance lives in."""
    return FreshSchedd(collector, testbed.master_fqdn)


class LibvirtConns(dict):
    """A libvirt connection to each host that runs VMs, by host name; made again when a test has
    restarted that host's libvirtd (or the whole host)."""

    def __init__(self, testbed: Testbed):
        super().__init__()
        self.testbed = testbed

    def __getitem__(self, name: str):
        import libvirt
        conn = self.get(name)
        try:
            # isAlive() does not notice a libvirtd restarted under an idle connection: ask it something
            alive = conn is not None and conn.isAlive() == 1 and conn.getLibVersion() > 0
        except libvirt.libvirtError:
            alive = False
        if not alive:
            conn = libvirt.open(self.testbed.libvirt_uri(name))
            self[name] = conn
        return conn


@pytest.fixture(scope="session")
def libvirt_conns(testbed: Testbed):
    """A libvirt connection to every host that runs VMs, by host name."""
    conns = LibvirtConns(testbed)
    yield conns
    for conn in conns.values():
        try:
            conn.close()
        except Exception:  # a connection to a libvirtd that is gone
            pass


def api_session(testbed: Testbed, user: str, password: str):
    import requests
    s = requests.Session()
    s.auth = (testbed.env[user], testbed.env[password])
    s.base = testbed.env["CONDOR_CLOUD_API_URL"]
    return s


@pytest.fixture(scope="module")
def instances(testbed: Testbed, schedd):
    """Submits instance jobs as the API does (handles: tests/cloud.py); removes them after the module."""
    from cloud import Instances
    inst = Instances(testbed, schedd)
    yield inst
    inst.remove_all()


@pytest.fixture(scope="session")
def api(testbed: Testbed):
    """A requests session for the Deltacloud API, authenticated as the testbed's admin
    (``api.base`` is the API's URL)."""
    return api_session(testbed, "CONDOR_CLOUD_API_USER", "CONDOR_CLOUD_API_PASSWORD")


@pytest.fixture(scope="session")
def api2(testbed: Testbed):
    """The same for the testbed's second, ordinary user."""
    return api_session(testbed, "CONDOR_CLOUD_API_USER2", "CONDOR_CLOUD_API_PASSWORD2")
