"""The approval page, served by uvicorn on 127.0.0.1, driven over HTTP and in Debian's headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import uvicorn
from test_approval import AGENT, EXP, make_scenario

from genepool.core.genome import Genome
from genepool.registry import PromptRegistry
from genepool.web.app import create_app, serve

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[1] / "benchmarks" / "screenshots" / "approval.png"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http(method: str, url: str, data: dict | None = None, headers: dict | None = None):
    """(status, headers, body) without following redirects."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _opener.open(req, timeout=20) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


@pytest.fixture
def server(db):
    """The app on a free 127.0.0.1 port (socket bound before the server starts), stopped afterwards."""
    ids = make_scenario(db)
    approved = []
    app = create_app(db, on_approved=approved.append)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "ids": ids, "approved": approved, "db": db, "app": app}
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()
    assert not thread.is_alive()


def test_pages_render_scores_diff_and_plot(server):
    base, ids = server["url"], server["ids"]
    status, _, body = http("GET", base + "/")
    assert status == 200 and AGENT in body and ids["seed"] in body
    assert re.search(r"<td class=\"num\"><strong>2</strong></td>", body)  # two candidates waiting

    status, _, body = http("GET", f"{base}/agents/{AGENT}")
    assert status == 200
    assert f'<code id="production-id">{ids["seed"]}</code>' in body
    # score table: candidate A 75.0% vs 50.0% (+25.0 pp), 112.0 vs 102.5 tokens
    assert re.search(
        r"75\.0%</span>\s*<span class=\"vs\">vs 50\.0%</span>\s*<span class=\"delta good\">\+25\.0 pp", body
    )
    assert re.search(r"112\.0</span>\s*<span class=\"vs\">vs 102\.5</span>\s*<span class=\"delta bad\">\+9\.5", body)
    assert "compared on the 4 of 5 items both ran" in body
    # coloured diff, with the few-shot example change of candidate B
    assert '<span class="add">+    - Use lower case only.</span>' in body
    assert '<span class="add">+      The app crashes</span>' in body
    # inline SVG: three points of the latest generation, two on the front (orange)
    svg = body[body.index("<svg"): body.index("</svg>")]
    assert svg.count('<circle cx=') == 2 + 3  # A and B, plus three legend dots
    assert svg.count('fill="#e8590c" stroke="#1c1c1c"') == 2  # both candidates on the front, outlined
    assert svg.count('fill="#1c7ed6" stroke="#0b3d91"') == 1  # production (not on the front) as a square
    assert "<polyline" in svg and ">v1.1.0</text>" in svg
    assert body.count('class="approve"') == 2 and body.count('name="csrf"') == 2

    status, _, body = http("GET", f"{base}/agents/planner")
    assert status == 404 and "has no prompts" in body and "support-desk" in body


def test_user_data_is_escaped(server):
    db = server["db"]
    reg = PromptRegistry(db)
    evil = reg.register(AGENT, Genome(role='Ignore rules <script>alert("x")</script> & <b>bold</b>'),
                        parent_ids=[server["ids"]["seed"]], experiment_id=EXP, generation=1)
    reg.label(evil.id, "candidate", "<img src=x onerror=alert(1)>", "<i>reason</i>")
    status, _, body = http("GET", f"{server['url']}/agents/{AGENT}")
    assert status == 200
    assert "<script>alert" not in body and "<img src=x" not in body and "<i>reason</i>" not in body
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


def test_posts_need_the_page_token_an_approver_and_a_local_host(server):
    base, ids, db = server["url"], server["ids"], server["db"]
    url = f"{base}/agents/{AGENT}/prompts/{ids['a']}/approve"
    # no token (e.g. a form on another web site posting to 127.0.0.1): refused, nothing changes
    status, _, body = http("POST", url, {"approver": "mallory", "reason": "x"})
    assert status == 403 and "reload the page" in body
    status, _, _ = http("POST", url, {"approver": "mallory", "csrf": "guess"})
    assert status == 403
    # a foreign Host header (DNS rebinding) is refused
    status, _, _ = http("GET", base + "/", headers={"Host": "evil.example"})
    assert status == 400
    token = server["app"].state.csrf_token
    # missing approver: redirect back with an error flash shown once on the page
    status, headers, _ = http("POST", url, {"approver": "  ", "reason": "x", "csrf": token})
    assert status == 303 and headers["Location"] == f"/agents/{AGENT}"
    cookie = headers["Set-Cookie"].split(";")[0]
    status, headers, body = http("GET", f"{base}/agents/{AGENT}", headers={"Cookie": cookie})
    assert 'class="flash flash-error"' in body and "Approver is required" in body and ids["a"] in body
    assert "genepool_flash=" in headers["Set-Cookie"] and "Max-Age=0" in headers["Set-Cookie"]  # shown once
    # approving a non-candidate gives the service's message
    status, headers, _ = http("POST", f"{base}/agents/{AGENT}/prompts/{ids['seed']}/approve",
                              {"approver": "alice", "csrf": token})
    cookie = headers["Set-Cookie"].split(";")[0]
    _, _, body = http("GET", f"{base}/agents/{AGENT}", headers={"Cookie": cookie})
    assert "is &#39;production&#39;, not &#39;candidate&#39;" in body
    # a prompt id posted under another agent's page is refused
    reg = PromptRegistry(db)
    other = reg.register("planner", Genome(role="You plan."))
    reg.label(other.id, "candidate", "genepool")
    status, headers, _ = http("POST", f"{base}/agents/{AGENT}/prompts/{other.id}/approve",
                              {"approver": "alice", "csrf": token})
    cookie = headers["Set-Cookie"].split(";")[0]
    _, _, body = http("GET", f"{base}/agents/{AGENT}", headers={"Cookie": cookie})
    assert "belongs to agent &#39;planner&#39;" in body and reg.get(other.id).state == "candidate"
    assert PromptRegistry(db).get_prompt(AGENT).id == ids["seed"] and server["approved"] == []


def test_serve_runs_uvicorn_on_loopback(db_url):
    """The real entry point (what `genepool web` calls), in its own process, stopped by its pid."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys; from genepool.db import Database; from genepool.web.app import serve; "
            "serve(port=int(sys.argv[1]), db=Database(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(port), db_url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _, body = http("GET", f"http://127.0.0.1:{port}/")
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200 and "No prompts in the registry yet" in body, proc.poll()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    assert "Uvicorn running on http://127.0.0.1:" in out


def test_serve_refuses_non_loopback_hosts():
    with pytest.raises(ValueError, match=r"only listens on 127\.0\.0\.1"):
        serve(host="0.0.0.0", port=8765)
    with pytest.raises(ValueError, match="not a TCP port"):
        serve(host="127.0.0.1", port=0)


# --- headless Chromium ----------------------------------------------------------------------------------
@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Debian chromium/chromium-driver not installed: run scripts/ensure_chromium.sh as root")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _full_page_png(driver, path: Path) -> bytes:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 40, 800), 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path.read_bytes()


def test_approve_in_headless_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    base, ids, db = server["url"], server["ids"], server["db"]
    reg = PromptRegistry(db)
    wait = WebDriverWait(browser, 20)
    browser.get(base + "/")
    browser.find_element(By.LINK_TEXT, AGENT).click()
    wait.until(EC.presence_of_element_located((By.ID, "production-id")))
    assert browser.find_element(By.ID, "production-id").text == ids["seed"]

    # Approve without a name: the page says what is missing and nothing changes
    browser.find_element(By.ID, f"approve-{ids['a']}").click()
    flash = wait.until(EC.presence_of_element_located((By.ID, "flash")))
    assert "Approver is required" in flash.text and "flash-error" in flash.get_attribute("class")
    assert reg.get_prompt(AGENT).id == ids["seed"]
    browser.get(f"{base}/agents/{AGENT}")  # the flash message is shown once
    wait.until(EC.presence_of_element_located((By.ID, "production-id")))
    assert not browser.find_elements(By.ID, "flash")

    browser.find_element(By.ID, f"approver-{ids['a']}").send_keys("Alice Reviewer")
    browser.find_element(By.ID, f"reason-{ids['a']}").send_keys("+25 pp on validation, +50 pp on test")
    shot = _full_page_png(browser, tmp_path / "before.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 30_000
    if os.environ.get("GENEPOOL_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "before.png", SCREENSHOT)

    browser.find_element(By.ID, f"approve-{ids['a']}").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "flash"), "now in production"))
    assert browser.find_element(By.ID, "production-id").text == ids["a"]
    assert "flash-ok" in browser.find_element(By.ID, "flash").get_attribute("class")
    history = browser.find_element(By.ID, "history").text
    assert "Alice Reviewer" in history and "+25 pp on validation" in history and "archived" in history
    assert not browser.find_elements(By.ID, f"cand-{ids['a']}")  # no longer a candidate
    # the registry agrees, and the hook saw the approval
    assert reg.get_prompt(AGENT).id == ids["a"]
    assert reg.get(ids["seed"]).state == "archived"
    assert reg.history(ids["a"])[-1]["actor"] == "Alice Reviewer"
    assert [r.id for r in server["approved"]] == [ids["a"]]

    # Reject the other candidate
    browser.find_element(By.ID, f"approver-{ids['b']}").send_keys("Bob")
    browser.find_element(By.ID, f"reject-{ids['b']}").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "flash"), "Rejected"))
    assert reg.get(ids["b"]).state == "rejected"
    assert browser.find_element(By.ID, "no-candidates")
    after = _full_page_png(browser, tmp_path / "after.png")
    assert after[:8] == b"\x89PNG\r\n\x1a\n" and len(after) > 20_000
