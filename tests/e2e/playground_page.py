"""Driving the playground in headless Chromium: a page that records what it fetches."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Screenshots for people to look at; .gitignore keeps them out of the repository.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "playground"
WIDE = {"width": 1400, "height": 1000}
NARROW = {"width": 390, "height": 844}

# Records every value the open video's progress bar takes. Observer callbacks run after
# a burst of updates, so each record's old value is kept; `progressValues()` adds the last.
RECORD_PROGRESS = """() => {
  window.progressOld = [];
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.target.id === "job-progress") window.progressOld.push(Number(change.oldValue));
    }
  }).observe(document.body, {
    subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ["value"],
  });
  window.progressValues = () =>
    [...window.progressOld, document.querySelector("#job-progress").value];
}"""

# Controls a screen reader could not name: no <label>, aria-label or text.
UNLABELLED = """() => {
  const named = (c) => c.labels?.length || c.getAttribute("aria-label")
    || (c.tagName === "BUTTON" && c.textContent.trim());
  const controls = "input, select, textarea, button, progress, video, audio";
  return [...document.querySelectorAll(controls)].filter((c) => !named(c))
    .map((c) => c.id || c.outerHTML.slice(0, 80));
}"""

DROP = """([data, name, type]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  return transfer;
}"""


@dataclass
class Recorded:
    """A page and everything it did: requests, uncaught script errors."""

    page: Any
    requests: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, url: str, key: str | None = None) -> None:
        """Load the playground and wait until it has loaded limits, models and history."""
        self.page.goto(url + "/")
        self.page.wait_for_selector("body[data-ready=true]")
        if key is not None:
            self.page.fill("#apikey", key)
            self.page.press("#apikey", "Enter")
            self.page.wait_for_function(
                "() => !document.querySelector('#apikey-error').textContent"
            )

    def drop(self, zone: str, path: Path, mime: str) -> None:
        """Drop a file on a zone as a person dragging it from their desktop would."""
        data = base64.b64encode(path.read_bytes()).decode()
        transfer = self.page.evaluate_handle(DROP, [data, path.name, mime])
        self.page.dispatch_event(f"#{zone} [data-zone]", "dragover", {"dataTransfer": transfer})
        self.page.dispatch_event(f"#{zone} [data-zone]", "drop", {"dataTransfer": transfer})

    def unlabelled(self) -> list[str]:
        """Controls on the page without an accessible name."""
        return list(self.page.evaluate(UNLABELLED))

    def text(self, selector: str) -> str:
        """The visible text of an element."""
        return str(self.page.inner_text(selector))

    def wait_status(self, status: str, timeout: float = 60_000) -> None:
        """Wait until the open video shows this status."""
        self.page.wait_for_function(
            "(s) => document.querySelector('#job-status')?.dataset.status === s",
            arg=status,
            timeout=timeout,
        )

    def screenshot(self, name: str) -> Path:
        """A full-page screenshot under test-artifacts/playground/."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def urls(self) -> list[str]:
        """Every URL the page requested."""
        return [request.url for request in self.requests]

    def posts(self, path: str) -> list[Any]:
        """The POST requests the page sent to a path."""
        return [r for r in self.requests if r.method == "POST" and r.url.endswith(path)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (never a downloaded one), shared by a module's tests."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield browser
        browser.close()


@pytest.fixture
def playground(browser: Any) -> Iterator[Recorded]:
    """A fresh browser profile (empty local storage) with a recorded page."""
    context = browser.new_context(viewport=WIDE, accept_downloads=True)
    context.set_default_timeout(15_000)
    recorded = Recorded(context.new_page())
    recorded.page.on("request", lambda request: recorded.requests.append(request))
    recorded.page.on("pageerror", lambda error: recorded.errors.append(str(error)))
    yield recorded
    context.close()
    assert recorded.errors == [], "the page's scripts threw"
