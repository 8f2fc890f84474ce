"""The Dagster UI, as a person sees it: the webserver on 127.0.0.1 and a real headless Chromium."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from finetune_assets_tests.conftest import INDEX, dagster_env
from finetune_assets_tests.test_definitions import STAGES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("FINETUNE_SCREENSHOT_DIR", "test-screenshots"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(pipeline_run):
    assert pipeline_run["completed"].returncode == 0, "the pipeline run the UI shows failed"
    port = _free_port()
    webserver_bin = str(Path(sys.executable).with_name("dagster-webserver"))
    # Its own process group, so the whole tree (webserver + code server) stops at the end.
    process = subprocess.Popen([webserver_bin, "-h", "127.0.0.1", "-p", str(port), "-m", "finetune_assets.definitions"],
                               env=dagster_env(pipeline_run["home"], pipeline_run["storage"]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dagster-webserver did not start: {process.stderr.read().decode()[-2000:]}")
                time.sleep(1)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: scripts/setup.sh --test installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000})
        yield context
        context.close()


@pytest.mark.ui
def test_asset_graph_shows_every_asset(webserver, browser):
    from finetune_assets.definitions import all_assets

    groups: dict[str, list[str]] = {}
    for asset in all_assets:
        for key, group in asset.group_names_by_key.items():
            groups.setdefault(group, []).append(key.to_user_string())
    assert sorted(name for names in groups.values() for name in names) == sorted(STAGES)
    page = browser.new_page()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The global lineage shows one node per stage folder (asset group), linked in pipeline order.
    page.goto(f"{webserver}/asset-groups", wait_until="networkidle")
    for group in groups:
        page.get_by_text(group, exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / "asset-graph.png"), full_page=True)
    assert (SCREENSHOTS / "asset-graph.png").stat().st_size > 10_000
    for names in groups.values():  # and every asset has its page
        for name in names:
            page.goto(f"{webserver}/assets/{name}", wait_until="networkidle")
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)


@pytest.mark.ui
def test_partition_is_listed_and_materialized(webserver, browser):
    page = browser.new_page()
    page.goto(f"{webserver}/assets/evaluation_report?view=partitions", wait_until="networkidle")
    page.get_by_text(INDEX, exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / "partitions.png"), full_page=True)
    page.goto(f"{webserver}/assets/evaluation_report", wait_until="networkidle")
    # The report table from the asset's metadata is rendered on the asset page.
    page.get_by_text("ndcg@10_tuned").first.wait_for(timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / "evaluation-report.png"), full_page=True)
