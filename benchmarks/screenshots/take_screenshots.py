"""Regenerate the Dagster UI screenshots in benchmarks/screenshots/ (headless Chromium + Selenium).

    nice .venv/bin/python benchmarks/screenshots/take_screenshots.py [--generations 2] [--critic-generations 1]
        [--keep DIR [--no-run]]

In a fresh temporary data folder (its own embedded PostgreSQL and DAGSTER_HOME; your data/ is not touched):
runs `genepool run --agent support-desk` N times and `genepool run --agent critic` M times on the real local
model (SmolLM2-135M, a small GENEPOOL_OPTIMIZER so each generation takes a minute or two; GENEPOOL_LLM_THREADS
is passed through, default 1), approves the best support-desk candidate if there is one (otherwise rejects
one experimental support-desk prompt, saying so in the reason, so the lineage table holds a person's decision),
starts `dagster-webserver` on 127.0.0.1, dismisses Dagster's community pop-up and saves:

- partitions.png           pareto_front's Partitions tab with the cell critic|g0001 selected. Dagster 1.13 draws
                           a 2-D MultiPartitionsDefinition as two linked columns, one per dimension (agent, then
                           the generations of the selected agent; each agent's dots summarise its generations),
                           with the selected cell's materialisation on the right
- partitions_by_agent.png  generation_job's Partitions page with per-asset status: the six assets by agent
- pareto_plot.png          the Pareto scatter PNG in the metadata of support-desk's latest generation
- agent_history.png        the same cell's support-desk success/tokens-over-generations plot
- registry_lineage.png     prompt_registry's latest materialisation: its lineage table (parent, experiment,
                           approver/reviewer, reason)

Needs /usr/bin/chromium and /usr/bin/chromedriver (scripts/ensure_chromium.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
SMALL = {
    "trace_items": 8,
    "population_size": 3,
    "n_targets": 3,
    "n_controls": 2,
    "validate_top": 1,
    "validation_items": 4,
    "test_items": 3,
    "max_rollouts": 24,
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _genepool(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
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


def _click_first(driver, xpath: str, settle_s: float = 3) -> None:
    """Click the first element of ``xpath`` that takes the click (some are covered or stale), then let it settle."""
    from selenium.webdriver.common.by import By

    for el in driver.find_elements(By.XPATH, xpath):
        try:
            el.click()
            break
        except Exception:
            continue
    time.sleep(settle_s)


def _shot(
    driver,
    url: str,
    name: str,
    wait_text: str | None = None,
    scroll_to: str | None = None,
    open_markdown: str | None = None,
    click_button: str | None = None,
    height: int = 1000,
) -> None:
    from selenium.webdriver.common.by import By

    driver.set_window_size(1500, height)  # a tall window for a long table in a pop-up (it does not scroll)
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
    if click_button:
        _click_first(driver, f"//button[contains(., '{click_button}')]")
    if open_markdown:  # long markdown (an embedded PNG) sits behind a "[Show Markdown]" link: open it
        _click_first(driver, f"//tr[td[contains(., '{open_markdown}')]]//*[contains(text(), 'Show Markdown')]")
    else:
        _dismiss_popups(driver)
    path = OUT / name
    driver.save_screenshot(str(path))
    print(f"saved {path.relative_to(ROOT)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generations", type=int, default=3, help="generations of support-desk")
    ap.add_argument("--critic-generations", type=int, default=1, help="generations of critic (>= 1 for the grid)")
    ap.add_argument("--keep", help="use this data folder (kept) instead of a temporary one")
    ap.add_argument("--no-run", action="store_true", help="with --keep: no new generations, screenshots only")
    args = ap.parse_args()
    data = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="genepool-shots-"))
    data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "GENEPOOL_", "DAGSTER_"))}
    env.update(
        {
            "GENEPOOL_DATA_DIR": str(data),
            "DAGSTER_HOME": str(data / "dagster_home"),
            "XDG_RUNTIME_DIR": str(data / "run"),
            "PYTHONPATH": str(ROOT),
            "GENEPOOL_OPTIMIZER": json.dumps(SMALL),
            "GENEPOOL_LLM_THREADS": os.environ.get("GENEPOOL_LLM_THREADS", "1"),
        }
    )
    (data / "run").mkdir(exist_ok=True, mode=0o700)
    _genepool(env, "db", "start")
    for agent, n in (("support-desk", args.generations), ("critic", args.critic_generations)):
        for _ in range(0 if args.no_run else n):
            started = time.monotonic()
            _genepool(env, "run", "--agent", agent)
            print(f"{agent}: generation done in {time.monotonic() - started:.0f} s", flush=True)
    listing = _genepool(env, "prompts", "--agent", "support-desk", "--state", "candidate").stdout.split()
    if listing and not args.no_run:
        _genepool(env, "approve", listing[0], "--by", "screenshot-script", "--reason", "best validation success")
    elif not args.no_run:
        experimental = _genepool(env, "prompts", "--agent", "support-desk", "--state", "experimental").stdout.split()
        if experimental:
            _genepool(
                env,
                "reject",
                experimental[0],
                "--by",
                "screenshot-script",
                "--reason",
                "no candidate passed validation in this small run",
            )
    # support-desk's latest generation (the `gen N` column of `genepool prompts`): its cell holds the plots
    rows = _genepool(env, "prompts", "--agent", "support-desk").stdout
    gens = [int(m) for m in re.findall(r"\bgen (\d+)\b", rows)]
    if not gens or max(gens) < 1:
        raise SystemExit("support-desk has no generation to screenshot; run without --no-run")
    cell = quote(f"support-desk|g{max(gens):04d}", safe="")
    port = _port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
        parts = f"{base}/assets/pareto_front?view=partitions&partition="
        _shot(driver, parts + quote("critic|g0001", safe=""), "partitions.png", wait_text="pareto_plot")
        _shot(
            driver,
            f"{base}/locations/genepool/jobs/generation_job/partitions",
            "partitions_by_agent.png",
            wait_text="per-asset status",
            click_button="Show per-asset status",
        )
        _shot(driver, parts + cell, "pareto_plot.png", wait_text="pareto_plot", open_markdown="pareto_plot")
        _shot(
            driver,
            parts + cell,
            "agent_history.png",
            wait_text="agent_history_plot",
            open_markdown="agent_history_plot",
        )
        _shot(
            driver,
            f"{base}/assets/prompt_registry?view=events",
            "registry_lineage.png",
            wait_text="lineage",
            scroll_to="lineage",
            open_markdown="lineage",
            height=1600,
        )
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
