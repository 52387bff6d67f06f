"""The condor-cloud command line on the master, on the same core as the API."""
from __future__ import annotations

import json
import shutil
import uuid

import pytest

from cloud import wait_page
from harness import Testbed, wait_for


def cli(testbed: Testbed, *args: str, as_root: bool = False):
    user = [] if as_root else ["setpriv", "--reuid=condor-cloud", "--regid=condor-cloud", "--init-groups"]
    return testbed.run("master", *user, "condor-cloud", *args, check=False)


def cli_json(testbed: Testbed, *args: str):
    done = cli(testbed, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def imported(testbed: Testbed):
    """A guest image imported from a file on the master."""
    name = f"cli-{uuid.uuid4().hex[:6]}.img"
    shutil.copyfile(testbed.guest_image, testbed.path("master", "/tmp/upload.img"))
    done = cli(testbed, "images", "import", "/tmp/upload.img", "--name", name, as_root=True)
    yield name, done
    (testbed.state / "shared_images" / name).unlink(missing_ok=True)


def test_images_import_publishes_a_verified_copy(testbed, imported):
    name, done = imported
    assert done.returncode == 0, done.stderr
    assert name in done.stdout
    published = testbed.state / "shared_images" / name
    assert published.read_bytes() == testbed.guest_image.read_bytes()
    assert not list((testbed.state / "shared_images" / "staging").glob(f".{name}*"))


def test_images_list_shows_the_imported_image(testbed, imported):
    assert imported[0] in [i["id"] for i in cli_json(testbed, "images", "list")]


def test_importing_over_a_published_image_is_refused(testbed, imported):
    done = cli(testbed, "images", "import", "/tmp/upload.img", "--name", imported[0], as_root=True)
    assert done.returncode == 1 and "already published" in done.stderr


def test_a_bad_image_name_is_refused(testbed):
    done = cli(testbed, "images", "import", "/tmp/upload.img", "--name", "../escape.img", as_root=True)
    assert done.returncode == 1 and "not an image id" in done.stderr


def test_nodes_lists_every_vm_host_with_libvirt_health(testbed):
    rows = {r["node"]: r for r in cli_json(testbed, "nodes")}
    assert {testbed.fqdn(h.name) for h in testbed.vm_hosts} <= set(rows)
    assert {r["libvirt"] for r in rows.values()} == {"ok"}


def test_status_counts_nodes_and_images(testbed):
    status = cli_json(testbed, "status")[0]
    assert status["nodes"] >= 2 and status["images"] >= 1


def test_a_human_table_has_a_header(testbed):
    done = cli(testbed, "images", "list")
    assert done.stdout.splitlines()[0].split() == ["ID", "FORMAT", "SIZE"]


def test_an_unknown_instance_is_a_clear_error(testbed):
    done = cli(testbed, "instances", "stop", "99999.0")
    assert done.returncode == 1 and "no instance" in done.stderr


@pytest.fixture(scope="module")
def launched(testbed: Testbed, imported):
    rows = cli_json(testbed, "instances", "launch", imported[0], "--name", "from-cli")
    iid = rows[0]["id"]

    def running():
        row = next(r for r in cli_json(testbed, "instances", "list") if r["id"] == iid)
        return row["state"] == "RUNNING" and row["addresses"] and row
    row = wait_for(running, 120, "the CLI's instance to run")
    yield row
    cli(testbed, "instances", "destroy", iid)


def test_instances_launch_runs_an_instance_that_answers(launched):
    assert launched["name"] == "from-cli"
    wait_page(launched["addresses"], "condor-cloud test guest")


def test_instances_console_shows_the_serial_log(testbed, launched):
    wait_for(lambda: "condor-cloud guest: address" in cli(testbed, "instances", "console", launched["id"]).stdout,
             30, "the console to show the guest's address")


def test_instances_destroy_removes_it(testbed, launched):
    assert cli(testbed, "instances", "destroy", launched["id"]).returncode == 0
    wait_for(lambda: launched["id"] not in [r["id"] for r in cli_json(testbed, "instances", "list")],
             60, "the instance to leave the list")
