"""Headless Chromium from Debian (`chromium`, `chromium-driver`), driven by selenium.

Nothing is downloaded: the browser and its driver are the system's, named by path, so
selenium's driver manager never runs. Chromium as root needs --no-sandbox; the other flags keep
it from reaching the network on its own and from sharing state with any other run.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--mute-audio",
    # a click plays at once (it is a user gesture anyway; this keeps headless runs alike)
    "--autoplay-policy=no-user-gesture-required",
)


def available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def need_chromium() -> None:
    if not available():
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install both)")


@contextlib.contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile, deleted after) as a selenium WebDriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
