"""The console in a real browser (Debian's Chromium, from the client's network): a person logs
in, launches an instance from the image list, watches it start on a list that refreshes
itself, reads its page and the nodes page, and destroys it. A hostile page on another
origin auto-submits forms to every route that changes something; nothing changes.

Screenshots of each page go to .testbed/screenshots/ for a person to look at."""
from __future__ import annotations

import base64
import html
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest

from cloud import wait_page
from harness import Testbed, wait_for

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CLIENT_ADDRESS = "198.18.0.9"  # the client host's address: another origin than the API's


def start_browser(profile: Path, *extra: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are not installed; run testbed/host-setup")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={profile}", *extra):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the network events, for attack()
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def log_in(browser, api: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    browser.get(api + "/instances?format=html")
    wait_for(lambda: "/api/login" in browser.current_url, 30, "the login form")
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: "/api/instances" in browser.current_url, 30, "the instances page after logging in")


@pytest.fixture(scope="module")
def screenshots(testbed: Testbed) -> Path:
    d = testbed.state / "screenshots"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser(testbed: Testbed, tmp_path_factory, screenshots):
    """Chromium logged in to the console as the testbed's admin, through the login form."""
    b = start_browser(tmp_path_factory.mktemp("chromium"))
    api = testbed.env["CONDOR_CLOUD_API_URL"]
    b.get(api + "/instances?format=html")
    wait_for(lambda: "/api/login" in b.current_url, 30, "the login form")
    b.save_screenshot(str(screenshots / "login.png"))
    log_in(b, api, testbed.env["CONDOR_CLOUD_API_USER"], testbed.env["CONDOR_CLOUD_API_PASSWORD"])
    yield b
    b.quit()


def is_stale(element) -> bool:
    """ELEMENT's page has been left (a new page loaded in its place)."""
    from selenium.common.exceptions import StaleElementReferenceException
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


def text_of(browser, by, value) -> str | None:
    """The text of an element, or None while the page is being reloaded (or it is missing)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    try:
        return browser.find_element(by, value).text
    except (NoSuchElementException, StaleElementReferenceException):
        return None


@pytest.fixture(scope="module")
def clicked(browser, testbed: Testbed, screenshots):
    """Launch from the image list, then watch the list (never reloaded by the test) until the
    instance runs with an address; open its page and the nodes page."""
    from selenium.webdriver.common.by import By
    api = testbed.env["CONDOR_CLOUD_API_URL"]
    browser.get(api + "/images?format=html")
    browser.save_screenshot(str(screenshots / "images.png"))
    browser.find_element(By.ID, "name-tiny.img").send_keys("from-browser")
    browser.find_element(By.ID, "launch-tiny.img").click()
    wait_for(lambda: "/api/instances" in browser.current_url, 30, "the instances page")
    rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "#instances tr") if "from-browser" in r.text]
    iid = rows[-1].get_attribute("id").removeprefix("instance-")
    first_state = text_of(browser, By.CSS_SELECTOR, f"[id='instance-{iid}'] .state")
    refreshing = bool(browser.find_elements(By.ID, "refreshing"))
    browser.save_screenshot(str(screenshots / "instances-pending.png"))

    def running():
        row = text_of(browser, By.ID, f"instance-{iid}")
        address = text_of(browser, By.CSS_SELECTOR, f"[id='instance-{iid}'] .addresses")
        return row and "RUNNING" in row and address
    address = wait_for(running, 150, "the self-refreshing list to show the instance RUNNING with an address",
                       interval=1)
    browser.save_screenshot(str(screenshots / "instances-running.png"))
    guest = wait_page(address, "condor-cloud test guest")

    browser.find_element(By.CSS_SELECTOR, f"[id='instance-{iid}'] a.name").click()
    wait_for(lambda: f"/api/instances/{iid}" in browser.current_url, 30, "the instance page")

    def console():
        browser.refresh()
        text = text_of(browser, By.ID, "console")
        return text and "condor-cloud guest: address" in text and text
    console_text = wait_for(console, 60, "the console on the instance page", interval=2)
    facts = text_of(browser, By.ID, "facts")
    browser.save_screenshot(str(screenshots / "instance.png"))

    browser.get(api + "/nodes?format=html")
    nodes = browser.find_element(By.TAG_NAME, "main").text
    browser.save_screenshot(str(screenshots / "nodes.png"))

    browser.get(f"{api}/instances/{iid}?format=html")
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, f"destroy-{iid}").click()
    # The click only starts the form's submission: navigating away before the page is left
    # would cancel the POST.
    wait_for(lambda: is_stale(page), 30, "the destroy form to be submitted", interval=0.2)

    def gone():
        browser.get(api + "/instances?format=html")
        state = text_of(browser, By.CSS_SELECTOR, f"[id='instance-{iid}'] .state")
        return state is None or state == "FINISH"
    wait_for(gone, 60, "the instance to leave the list", interval=2)
    return {"id": iid, "address": address, "guest": guest, "first_state": first_state, "refreshing": refreshing,
            "console": console_text, "facts": facts, "nodes": nodes}


def test_a_click_on_launch_starts_an_instance_that_answers(clicked):
    assert "condor-cloud test guest" in clicked["guest"]


def test_the_list_refreshes_itself_while_the_instance_starts(clicked):
    assert clicked["first_state"] == "PENDING" and clicked["refreshing"]


def test_the_instance_page_shows_its_facts_and_console(clicked):
    for fact in (clicked["id"], clicked["address"], "tiny.img", "52:54:00:", "RUNNING"):
        assert fact in clicked["facts"]
    assert f"address {clicked['address']}" in clicked["console"]


def test_the_nodes_page_shows_each_node_with_its_room_images_and_instances(clicked):
    nodes = clicked["nodes"]
    for text in ("master.cloud.testbed", "node1.cloud.testbed", "libvirt: answers", "free of 8", "tiny.img",
                 "from-browser"):
        assert text in nodes


def test_a_click_on_destroy_removes_it(clicked, api):
    r = api.get(f"{api.base}/instances/{clicked['id']}", headers={"Accept": "application/xml"}, timeout=10)
    assert r.status_code == 404 or "FINISH" in r.text


def test_each_page_was_photographed(clicked, screenshots):
    for name in ("login", "images", "instances-pending", "instances-running", "instance", "nodes"):
        assert (screenshots / f"{name}.png").stat().st_size > 5000


# -- a hostile page on another origin ---------------------------------------------------------------

ENCTYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def state_changing_requests(iid: str) -> list[tuple[str, dict[str, str]]]:
    """(path, fields) of a form for every route that changes something (the EC2 endpoint's too);
    DELETE as HTML forms send it."""
    from condor_cloud.api.app import ACTIONS, ROUTES
    found = []
    for route in ROUTES:
        if not route.methods & {"POST", "DELETE"}:
            continue
        for action in (ACTIONS if "{action}" in route.path else ("",)):
            path = route.path.replace("{id}", iid).replace("{action}", action)
            fields = {"image_id": "tiny.img", "name": "csrf-attack", "user": "admin", "password": "x",
                      "_method": "delete"}
            found.append((path, fields))
    return found


def hostile_page(api: str, iid: str) -> str:
    """A page that, once loaded, posts every form into its own frame, sending no Referer."""
    root = api.removesuffix("/api")
    parts = ['<!DOCTYPE html><html><head><meta name="referrer" content="no-referrer"></head><body>']
    n = 0
    for path, fields in state_changing_requests(iid):
        for enctype in ENCTYPES:
            for fmt in ("xml", "json", "html"):
                parts.append(f'<iframe name="f{n}" id="f{n}"></iframe>'
                             f'<form method="post" target="f{n}" enctype="{enctype}" '
                             f'action="{html.escape(root + path)}?format={fmt}">')
                parts += [f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items()]
                parts.append("</form>")
                n += 1
    parts.append("<script>for (const f of document.forms) f.submit();</script></body></html>")
    return "".join(parts)


@pytest.fixture(scope="module")
def victim(api):
    """A running instance of the admin's: every action is allowed on it."""
    r = api.post(api.base + "/instances", params={"image_id": "tiny.img", "name": "victim"},
                 headers={"Accept": "application/json"}, timeout=30)
    iid = r.json()["instance"]["id"]

    def running():
        i = api.get(f"{api.base}/instances/{iid}", headers={"Accept": "application/json"}, timeout=30).json()
        return i["instance"]["state"] == "RUNNING"
    wait_for(running, 150, "the victim instance to run")
    yield iid
    api.delete(f"{api.base}/instances/{iid}", timeout=30)


@pytest.fixture(scope="module")
def hostile_server(testbed: Testbed, victim):
    page = hostile_page(testbed.env["CONDOR_CLOUD_API_URL"], victim).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer((CLIENT_ADDRESS, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{CLIENT_ADDRESS}:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def basic_browser(testbed: Testbed, tmp_path_factory):
    """The worst case: a browser that sends the admin's Basic credentials with every request,
    as one that cached them would (one process for every frame, so each gets the header)."""
    b = start_browser(tmp_path_factory.mktemp("chromium-basic"), "--disable-site-isolation-trials",
                      "--disable-features=IsolateOrigins,site-per-process")
    token = base64.b64encode(
        f"{testbed.env['CONDOR_CLOUD_API_USER']}:{testbed.env['CONDOR_CLOUD_API_PASSWORD']}".encode()).decode()
    b.execute_cdp_cmd("Network.enable", {})
    b.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    yield b
    b.quit()


def queue_state(schedd, iid: str) -> dict:
    attrs = ["JobStatus", "CloudRequest", "CloudVMState"]
    ads = schedd.query(f"ClusterId == {iid.split('.')[0]}", attrs)
    return {a: ads[0].get(a) for a in attrs} if ads else {}


def attack(browser, url: str, schedd, victim: str) -> tuple[dict, dict, list[tuple[str, int]], list]:
    """Load the hostile page; the victim's queue state before and after, and the URL and HTTP
    status of every form's answer (read from the browser's network events: the API's answers
    forbid framing, so a frame shows only the browser's own error page)."""
    from selenium.webdriver.common.by import By
    before = queue_state(schedd, victim)
    browser.get_log("performance")  # what came before the attack
    browser.get(url)
    forms = len(browser.find_elements(By.TAG_NAME, "form"))
    posted: dict[str, str] = {}
    answered: dict[str, int] = {}

    def answers():
        for entry in browser.get_log("performance"):
            event = json.loads(entry["message"])["message"]
            params = event.get("params", {})
            if event["method"] == "Network.requestWillBeSent" and params["request"]["method"] == "POST":
                posted[params["requestId"]] = params["request"]["url"]
            elif event["method"] == "Network.responseReceived" and params["requestId"] in posted:
                answered[params["requestId"]] = params["response"]["status"]
        return len(answered) == forms and [(posted[r], status) for r, status in answered.items()]
    try:
        statuses = wait_for(answers, 120, "every form's answer", interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}: {len(posted)} of {forms} forms sent, {len(answered)} answered; unanswered: "
                             f"{[u for r, u in posted.items() if r not in answered][:5]}") from None
    created = schedd.query('CloudName =?= "csrf-attack"', ["ClusterId"])
    return before, queue_state(schedd, victim), statuses, created


@pytest.fixture(scope="module", params=["session", "basic"])
def attacked(request, hostile_server, schedd, victim):
    browser = request.getfixturevalue("browser" if request.param == "session" else "basic_browser")
    return (request.param, browser, *attack(browser, hostile_server, schedd, victim))


def test_the_hostile_page_reached_the_api_with_every_form(attacked, victim):
    _, _, _, _, statuses, _ = attacked
    assert len(statuses) == len(state_changing_requests(victim)) * len(ENCTYPES) * 3
    assert [(url, status) for url, status in statuses if status != 403] == []  # refused: from another origin


def test_no_form_from_another_origin_changed_the_instance(attacked):
    _, _, before, after, _, _ = attacked
    assert after == before and after["JobStatus"] == 2


def test_no_form_from_another_origin_created_an_instance(attacked):
    assert attacked[5] == []


def test_the_console_session_survives_the_hostile_page(attacked, testbed: Testbed):
    from selenium.webdriver.common.by import By
    kind, browser, *_ = attacked
    if kind != "session":
        pytest.skip("only the logged-in browser has a session")
    browser.get(testbed.env["CONDOR_CLOUD_API_URL"] + "/instances?format=html")
    assert "/api/instances" in browser.current_url and browser.find_elements(By.ID, "logout")


def test_the_page_names_no_resource_elsewhere(browser, testbed: Testbed):
    browser.get(testbed.env["CONDOR_CLOUD_API_URL"] + "/images?format=html")
    source = browser.page_source
    assert "<script" not in source
    assert not re.findall(r'(?:src|href)="(?!http://198\.18\.0\.2:3002/)[a-z]+://', source)
