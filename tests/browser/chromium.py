"""Debian's chromium in headless mode, driven by selenium through Debian's chromedriver.

    python -m tests.browser.chromium URL OUT.png [WIDTHxHEIGHT]    a full-page screenshot of URL

Nothing is downloaded: the browser and the driver are the system's (scripts/setup.sh --browser installs
them), and selenium is told the driver's path so its driver manager never runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Running as root needs --no-sandbox; without the background-networking flags chromium keeps trying to
# reach Google services, which a closed network refuses (slow starts, noisy logs).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--lang=en-US",
    "--hide-scrollbars",
)


class BrowserMissingError(RuntimeError):
    pass


def find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; installs them with scripts/setup.sh when missing (as root)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    setup = subprocess.run(
        [str(ROOT / "scripts" / "setup.sh"), "--system-only", "--browser"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    raise BrowserMissingError(
        "the browser tests need Debian's chromium and chromedriver (packages chromium and chromium-driver); "
        f"`scripts/setup.sh --browser` could not install them (exit {setup.returncode}): "
        f"{(setup.stderr or setup.stdout).strip()[-800:]}"
    )


def start_driver(width: int = 1280, height: int = 900) -> Any:
    """A selenium WebDriver on a fresh profile; quit() it when done."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise BrowserMissingError(
            f"selenium is not installed ({exc}); run `scripts/setup.sh --dev` (requirements-dev.txt pins it)"
        ) from None
    chromium, driver = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="skpi-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    service = Service(executable_path=driver, log_output=str(Path(profile) / "chromedriver.log"))
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(30)
    real_quit = browser.quit

    def quit_and_clean() -> None:
        try:
            real_quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    browser.quit = quit_and_clean
    return browser


def screenshot(url: str, out: Path, width: int = 1280, height: int = 900, settle: float = 3.0) -> None:
    """Load the page, let it poll and draw, then save the whole page (not just the viewport)."""
    browser = start_driver(width, height)
    try:
        browser.get(url)
        time.sleep(settle)
        full = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, int(full) + 40)
        time.sleep(1.0)  # the charts redraw on resize
        out.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(out))
    finally:
        browser.quit()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m tests.browser.chromium URL OUT.png [WIDTHxHEIGHT]")
    w, h = (int(x) for x in (sys.argv[3] if len(sys.argv) == 4 else "1280x900").split("x"))
    screenshot(sys.argv[1], Path(sys.argv[2]), w, h)
    print(sys.argv[2])
