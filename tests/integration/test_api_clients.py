"""Existing clients work unchanged: the Deltacloud Python client, and a browser clicking the page."""
from __future__ import annotations

import shutil

import pytest

from cloud import wait_page
from harness import Testbed, wait_for


@pytest.fixture(scope="module")
def client(testbed: Testbed):
    import deltacloud
    return deltacloud.Deltacloud(testbed.env["CONDOR_CLOUD_API_URL"], testbed.env["CONDOR_CLOUD_API_USER"],
                                 testbed.env["CONDOR_CLOUD_API_PASSWORD"])


def test_the_python_client_checks_credentials(client, testbed):
    import deltacloud
    assert client.valid_credentials()
    wrong = deltacloud.Deltacloud(testbed.env["CONDOR_CLOUD_API_URL"], "admin", "wrong")
    assert not wrong.valid_credentials()


def test_the_python_client_lists_images_profiles_and_realms(client):
    assert "tiny.img" in [i.id for i in client.images()]
    assert {p.id for p in client.hardware_profiles()} == {"small", "medium", "large"}
    assert [r.id for r in client.realms()] == ["default"]


@pytest.fixture(scope="module")
def client_instance(client):
    instance = client.create_instance("tiny.img", {"hwp_id": "small", "name": "from-client"})
    yield instance
    import requests
    try:
        instance.refresh()
    except requests.HTTPError:  # already destroyed and gone
        return
    if "destroy" in instance.actions():
        instance.destroy()


def test_the_python_client_launches_an_instance(client, client_instance):
    assert client_instance.name == "from-client"
    assert client_instance.id in [i.id for i in client.instances()]

    def running():
        client_instance.refresh()
        return client_instance.state == "RUNNING" and client_instance.public_addresses
    wait_for(running, 120, "the client's instance to run with an address")
    wait_page(client_instance.public_addresses[0]["address"], "condor-cloud test guest")


def test_the_python_client_destroys_the_instance(client, client_instance):
    wait_for(lambda: client_instance.refresh() or "destroy" in client_instance.actions(), 60, "destroy")
    assert client_instance.destroy()
    wait_for(lambda: client_instance.id not in [i.id for i in client.instances()], 60, "the instance to go")


# -- a browser --------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(testbed: Testbed, tmp_path_factory):
    """Headless Chromium (Debian's), sending the API user's Basic credentials."""
    import base64

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are not installed; run testbed/host-setup")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    token = base64.b64encode(
        f"{testbed.env['CONDOR_CLOUD_API_USER']}:{testbed.env['CONDOR_CLOUD_API_PASSWORD']}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def clicked(browser, testbed: Testbed):
    """Launch an instance by clicking on the images page, wait for it, then destroy it by clicking."""
    from selenium.webdriver.common.by import By
    api = testbed.env["CONDOR_CLOUD_API_URL"]
    browser.get(api + "/images?format=html")
    browser.find_element(By.ID, "name-tiny.img").send_keys("from-browser")
    browser.find_element(By.ID, "launch-tiny.img").click()
    wait_for(lambda: "/instances" in browser.current_url, 30, "the instances page")
    rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "#instances tr")
            if "from-browser" in r.text]
    iid = rows[-1].get_attribute("id").removeprefix("instance-")

    def running():
        browser.get(api + "/instances?format=html")
        row = browser.find_element(By.ID, f"instance-{iid}")
        return row.find_element(By.CLASS_NAME, "state").text == "RUNNING" and \
            row.find_element(By.CLASS_NAME, "addresses").text and row
    row = wait_for(running, 120, "the instance to show RUNNING with an address", interval=2)
    address = row.find_element(By.CLASS_NAME, "addresses").text
    page = wait_page(address, "condor-cloud test guest")
    browser.find_element(By.ID, f"destroy-{iid}").click()

    def gone():
        browser.get(api + "/instances?format=html")
        return not browser.find_elements(By.ID, f"instance-{iid}") or \
            browser.find_element(By.ID, f"instance-{iid}").find_element(By.CLASS_NAME, "state").text == "FINISH"
    wait_for(gone, 60, "the instance to disappear from the page", interval=2)
    return iid, address, page


def test_a_click_on_launch_starts_an_instance_that_answers(clicked):
    assert "condor-cloud test guest" in clicked[2]


def test_a_click_on_destroy_removes_it(clicked, testbed):
    import requests
    r = requests.get(f"{testbed.env['CONDOR_CLOUD_API_URL']}/instances/{clicked[0]}",
                     auth=(testbed.env["CONDOR_CLOUD_API_USER"], testbed.env["CONDOR_CLOUD_API_PASSWORD"]),
                     headers={"Accept": "application/xml"}, timeout=10)
    assert r.status_code == 404 or "FINISH" in r.text
