"""Regenerate the Dagster UI screenshots in benchmarks/screenshots/ (headless Chromium + Selenium).

    .venv/bin/python benchmarks/screenshots/take_screenshots.py [--generations 2] [--keep DIR]

In a fresh temporary data folder (its own embedded PostgreSQL and DAGSTER_HOME; your data/ is not touched):
runs `genepool run --agent support-desk` N times on the real local model (SmolLM2-135M, a small
GENEPOOL_OPTIMIZER so each generation takes a minute or two), approves the best candidate if there is one,
starts `dagster-webserver` on 127.0.0.1, dismisses Dagster's community pop-up and saves:

- partitions.png       pareto_front's partitions view (agent/generation keys)
- pareto_plot.png      pareto_front's latest materialisation: the Pareto scatter PNG in its metadata
- agent_history.png    the same page scrolled to the per-agent success/tokens-over-generations plot
- registry_lineage.png prompt_registry: production prompt, candidates and the lineage table

Needs /usr/bin/chromium and /usr/bin/chromedriver (scripts/ensure_chromium.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
SMALL = {"trace_items": 8, "population_size": 3, "n_targets": 3, "n_controls": 2, "validate_top": 1,
         "validation_items": 4, "test_items": 3, "max_rollouts": 40}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _genepool(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    print(proc.stdout[-1500:], proc.stderr[-800:], sep="\n", flush=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"genepool {' '.join(args)} failed ({proc.returncode})")
    return proc


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def _dismiss_popups(driver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    for _ in range(3):
        clicked = False
        for el in driver.find_elements(By.XPATH, "//button|//a[@role='button']"):
            try:  # the page re-renders while we look: a stale element is skipped
                text = (el.text or "").strip().lower()
                if text in ("dismiss", "no thanks", "close", "skip", "not now", "maybe later", "got it"):
                    el.click()
                    clicked = True
            except Exception:
                continue
        try:
            driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        except Exception:
            pass
        if not clicked:
            break
        time.sleep(0.5)


def _shot(driver, url: str, name: str, wait_text: str | None = None, scroll_to: str | None = None,
          open_markdown: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        time.sleep(1.5)
        _dismiss_popups(driver)
        if wait_text is None or wait_text in driver.page_source:
            break
    time.sleep(2)
    if scroll_to:
        for el in driver.find_elements(By.XPATH, f"//*[contains(text(), '{scroll_to}')]"):
            try:
                driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", el)
                break
            except Exception:
                continue
        time.sleep(1)
    if open_markdown:  # long markdown (an embedded PNG) sits behind a "[Show Markdown]" link: open it
        xpath = f"//tr[td[contains(., '{open_markdown}')]]//*[contains(text(), 'Show Markdown')]"
        for el in driver.find_elements(By.XPATH, xpath):
            try:
                el.click()
                break
            except Exception:
                continue
        time.sleep(3)
    else:
        _dismiss_popups(driver)
    path = OUT / name
    driver.save_screenshot(str(path))
    print(f"saved {path.relative_to(ROOT)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--keep", help="use this data folder (kept) instead of a temporary one")
    ap.add_argument("--no-run", action="store_true", help="with --keep: no new generations, screenshots only")
    args = ap.parse_args()
    data = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="genepool-shots-"))
    data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "GENEPOOL_", "DAGSTER_"))}
    env.update({"GENEPOOL_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster_home"),
                "XDG_RUNTIME_DIR": str(data / "run"), "PYTHONPATH": str(ROOT),
                "GENEPOOL_OPTIMIZER": json.dumps(SMALL)})
    (data / "run").mkdir(exist_ok=True, mode=0o700)
    _genepool(env, "db", "start")
    for _ in range(0 if args.no_run else args.generations):
        _genepool(env, "run", "--agent", "support-desk")
    listing = _genepool(env, "prompts", "--agent", "support-desk", "--state", "candidate").stdout.split()
    if listing and not args.no_run:
        _genepool(env, "approve", listing[0], "--by", "screenshot-script", "--reason", "best validation success")
    port = _port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-w", str(ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = None
    try:
        import urllib.request

        end = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if time.monotonic() > end or server.poll() is not None:
                    raise SystemExit("dagster-webserver did not start") from None
                time.sleep(1)
        base = f"http://127.0.0.1:{port}"
        driver = _driver()
        _shot(driver, f"{base}/assets/pareto_front?view=partitions", "partitions.png", wait_text="g0001")
        _shot(driver, f"{base}/assets/pareto_front?view=events", "pareto_plot.png", wait_text="pareto_plot",
              scroll_to="pareto_plot", open_markdown="pareto_plot")
        _shot(driver, f"{base}/assets/pareto_front?view=events", "agent_history.png",
              wait_text="agent_history_plot", scroll_to="agent_history_plot", open_markdown="agent_history_plot")
        _shot(driver, f"{base}/assets/prompt_registry?view=events", "registry_lineage.png", wait_text="lineage",
              scroll_to="lineage")
    finally:
        if driver is not None:
            driver.quit()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        _genepool(env, "db", "stop", check=False)


if __name__ == "__main__":
    main()
