"""Real-browser testing for the console: Playwright for Python driving Debian's
``chromium`` (Playwright's own browser download does not work offline), a watcher that
records every request to another origin, every console error and every page error, and
axe-core (``tests/vendor/axe.min.js``, vendored from npm by
``console/static/vendor/update.sh``) run inside the page.

Chromium is installed by ``make test`` when missing (``apt-get install chromium``, as
root); ``chromium_path`` does the same when the suite runs as root without make, and
otherwise fails saying how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
SHOTS = ROOT / "docs" / "img"


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if os.path.exists(path):
        return path
    if os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        if os.path.exists("/usr/bin/chromium"):
            return "/usr/bin/chromium"
    raise RuntimeError(
        "the console's browser tests need Debian's chromium: run `make test` as root, or "
        "`apt-get install -y chromium`"
    )


@dataclass
class Watch:
    """What one page did that it must not: requests elsewhere, errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        def on_request(req: Any) -> None:
            url = req.url
            if not (url.startswith(self.origin + "/") or url.startswith("data:")
                    or url == self.origin):  # fmt: skip
                self.foreign.append(url)

        def on_console(msg: Any) -> None:
            if msg.type == "error":
                self.errors.append(f"console: {msg.text}")

        page.on("request", on_request)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))

    def clear(self) -> None:
        self.foreign.clear()
        self.errors.clear()


def run_axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the current page. The script is evaluated through the
    DevTools protocol, which the page's CSP does not govern (the console's own CSP
    would refuse an injected script tag, as it should)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text() + "\n;void 0")
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }"""
    )
    return list(result)


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v.get("impact") in ("serious", "critical")]
