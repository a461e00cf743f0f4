"""Headless Chromium through Selenium and the system chromedriver, plus the few Dagster UI
moves a person makes (by visible text, as they would find them)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

# Generous: the machine is small and shared with other test runs.
WAIT_S = 60.0
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)
TRANSIENT = (
    StaleElementReferenceException,
    NoSuchElementException,
    ElementClickInterceptedException,
)


def chromium_binary() -> str | None:
    candidates = [os.environ.get("CHROME_BIN"), "chromium", "chromium-browser", "google-chrome"]
    for name in candidates:
        if name and (found := shutil.which(name)):
            return found
    return None


def chromedriver_binary() -> str | None:
    name = os.environ.get("CHROMEDRIVER") or "chromedriver"
    return shutil.which(name)


def browser_available() -> bool:
    return bool(chromium_binary() and chromedriver_binary())


NO_BROWSER = (
    "needs chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)"
)


class _ChromeWithThrowawayProfile(webdriver.Chrome):
    """Chrome that deletes the profile dir made for it when it quits."""

    def __init__(self, profile: Path, **kwargs: Any) -> None:
        self._profile = profile
        super().__init__(**kwargs)

    def quit(self) -> None:
        try:
            super().quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)


def make_driver(profile_dir: Path | None = None) -> WebDriver:
    """Headless Chromium; without `profile_dir`, on a fresh profile that `quit()` deletes."""
    binary, driver = chromium_binary(), chromedriver_binary()
    if not binary or not driver:
        raise RuntimeError("chromium and chromedriver are required")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    if profile_dir is not None:
        options.add_argument(f"--user-data-dir={profile_dir}")
        return webdriver.Chrome(service=Service(driver), options=options)
    profile = Path(tempfile.mkdtemp(prefix="rp-e2e-chromium-"))
    options.add_argument(f"--user-data-dir={profile}")
    try:
        return _ChromeWithThrowawayProfile(profile, service=Service(driver), options=options)
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise


def text_is(text: str) -> str:
    """XPath predicate: the element's own visible text is exactly `text`."""
    return f"normalize-space()={_xpath_literal(text)}"


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    return 'concat("' + text.replace('"', '", \'"\', "') + '")'


class UI:
    """One browser on one Dagster webserver; every step can leave a numbered screenshot."""

    def __init__(self, driver: WebDriver, base_url: str, shots_dir: Path) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.shots_dir = shots_dir
        self._shot_no = 0

    # ------------------------------------------------------------------ basics
    def open(self, path: str) -> None:
        self.driver.get(f"{self.base_url}{path}")
        self.dismiss_welcome()

    def wait(
        self, condition: Callable[[WebDriver], Any], timeout: float = WAIT_S, what: str = ""
    ) -> Any:
        try:
            return WebDriverWait(
                self.driver, timeout, poll_frequency=0.5, ignored_exceptions=TRANSIENT
            ).until(condition)
        except TimeoutException:
            shot = self.screenshot(f"timeout-{re.sub(r'[^a-z0-9]+', '-', what.lower())[:40]}")
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what} (see {shot})"
            ) from None

    def find(self, xpath: str, timeout: float = WAIT_S, what: str = "") -> WebElement:
        def visible(d: WebDriver) -> WebElement | bool:
            for element in d.find_elements(By.XPATH, xpath):
                if element.is_displayed():
                    return element
            return False

        return self.wait(visible, timeout, what or xpath)

    def click(self, xpath: str, timeout: float = WAIT_S, what: str = "") -> None:
        def clicked(d: WebDriver) -> bool:
            for element in d.find_elements(By.XPATH, xpath):
                if element.is_displayed() and element.is_enabled():
                    element.click()
                    return True
            return False

        self.wait(clicked, timeout, what or xpath)

    def button(self, label: str, timeout: float = WAIT_S) -> None:
        self.click(f"//button[{text_is(label)}]", timeout, f"button {label!r}")

    def body_text(self) -> str:
        return str(self.driver.execute_script("return document.body.innerText"))

    def screenshot(self, name: str) -> Path:
        self._shot_no += 1
        path = self.shots_dir / f"{self._shot_no:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def dismiss_welcome(self) -> None:
        """Skip the 'Join the Dagster community' dialog if it shows anyway (the fixture marks
        it seen for the instance, so normally it does not)."""
        for element in self.driver.find_elements(By.XPATH, f"//button[{text_is('Skip')}]"):
            if element.is_displayed():
                element.click()

    # ------------------------------------------------------------------ Dagster moves
    def set_config_yaml(self, run_config_yaml: str) -> None:
        """Put YAML in the launch dialog's config editor, as pasting it would (CodeMirror 5)."""
        self.find("//*[contains(@class,'CodeMirror')]", what="the config editor")
        self.driver.execute_script(
            "document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])",
            run_config_yaml,
        )

    def run_status(self) -> str:
        """The status tag in a run page's header (Queued, Starting, Started, Success, ...)."""
        statuses = (
            "Success",
            "Failure",
            "Canceled",
            "Canceling",
            "Started",
            "Starting",
            "Queued",
            "Not started",
        )
        head = self.body_text()
        index = head.find("Runs\n/")
        window = head[index : index + 200] if index >= 0 else head[:2000]
        for status in statuses:
            if re.search(rf"^{status}$", window, re.MULTILINE):
                return status
        return "unknown"

    def wait_run_status(
        self, wanted: set[str], timeout: float, stop_on: frozenset[str] | set[str] = frozenset()
    ) -> str:
        def settled(_d: WebDriver) -> str | bool:
            status = self.run_status()
            if status in stop_on:
                raise AssertionError(
                    f"run ended {status}: {self.screenshot('run-' + status.lower())}"
                )
            return status if status in wanted else False

        return str(self.wait(settled, timeout, f"run status in {sorted(wanted)}"))

    def step_starts(self) -> list[str]:
        """Op names in the order the run log says they started (log filtered to STEP_START)."""
        box = self.find("//input[starts-with(@placeholder,'Filter')]", what="the run log filter")
        box.clear()
        box.send_keys("type:STEP_START\n")
        pattern = re.compile(r'Started execution of step "generated_video\.(\w+)"')

        def all_started(_d: WebDriver) -> list[str] | bool:
            ops = pattern.findall(self.body_text())
            return ops if "terminate_pod" in ops else False

        return list(self.wait(all_started, 30, "STEP_START events in the run log"))

    def graph_node_x(self, names: list[str]) -> dict[str, float]:
        """Left edge of each asset's node card in the lineage graph (cards show 'Latest event';
        the sidebar's plain list of names does not)."""
        script = """
        const out = {};
        for (const name of arguments[0]) {
          const hits = Array.from(document.querySelectorAll('*')).filter(e =>
            e.childElementCount === 0 && e.textContent.trim() === name &&
            e.getBoundingClientRect().width > 0);
          for (const e of hits) {
            let card = e;
            for (let i = 0; i < 6 && card; i++, card = card.parentElement) {
              if (card.textContent.includes('Latest event')) break;
            }
            if (card && card.textContent.includes('Latest event')) {
              const x = card.getBoundingClientRect().x;
              out[name] = name in out ? Math.min(out[name], x) : x;
            }
          }
        }
        return out;
        """
        return dict(self.driver.execute_script(script, names))
