"""A real headless Chromium (Debian's package) driven over the DevTools protocol, for tests.

Chromium is started with ``--remote-debugging-pipe``: the protocol's JSON
messages travel over file descriptors 3 (to the browser) and 4 (from it),
each ended by a NUL byte, so no port, no websocket library and nothing on the
network. The browser runs with its network off (the machine's is closed
anyway); a test can also list every request the page made.
"""

from __future__ import annotations

import base64
import fcntl
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

import orjson
import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container: Chromium's own sandbox needs user namespaces
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
    "--disable-breakpad",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def chromium_path() -> str:
    """The browser, or skip (fail in CI, where `make install-system` must have installed it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run this test (make install-system)")
        pytest.skip("chromium is not installed (make install-system, as root)")
    return path


class Browser:
    """One Chromium process and one page (a target attached in flat mode)."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 60):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="llmeval-chromium-")
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # Move the child's ends above 9 so the shell can put them on 3 and 4 whatever
        # numbers os.pipe() returned (3 and 4 themselves among them).
        child_r = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_r, from_w):
            os.close(fd)
        cmd = [
            "bash",
            "-c",
            f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-',
            "chromium",
            chromium_path(),
            *FLAGS,
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.stderr = open(os.path.join(self.profile, "stderr.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, pass_fds=(child_r, child_w), stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        os.close(child_r)
        os.close(child_w)
        self.out = os.fdopen(to_w, "wb", buffering=0)
        self.inp = os.fdopen(from_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    # -- the protocol

    def call(self, method: str, params: dict | None = None, session: bool = True) -> Any:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        self.out.write(orjson.dumps(msg) + b"\0")
        want = self.next_id
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = orjson.loads(raw)
                if reply.get("id") == want:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                if "method" in reply:
                    self.events.append(reply)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimeoutError(f"{method}: no reply from chromium in {self.timeout}s")
            chunk = self.inp.read(1 << 16)
            if not chunk:
                self.stderr.flush()
                with open(self.stderr.name, "rb") as fh:
                    tail = fh.read().decode(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"chromium exited (status {self.proc.poll()}): {tail}")
            self.buf += chunk

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e["method"] == method:
                    self.events.remove(e)
                    return e
            self.call("Runtime.evaluate", {"expression": "1"})  # pumps pending events
            time.sleep(0.05)
        raise TimeoutError(f"no {method} event in {self.timeout}s")

    # -- what tests use

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (exceptions raise)."""
        res = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the middle of the element."""
        box = self.eval(
            f"(function(){{var e=document.querySelector({orjson.dumps(selector).decode()});"
            "if(!e)return null;e.scrollIntoView({block:'center'});var r=e.getBoundingClientRect();"
            "return [r.left+r.width/2, r.top+r.height/2];})()"
        )
        if box is None:
            raise AssertionError(f"no element matches {selector!r}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def type_text(self, selector: str, text: str) -> None:
        """Focus an input and type into it as a keyboard would (input events fire)."""
        self.eval(f"document.querySelector({orjson.dumps(selector).decode()}).focus()")
        self.call("Input.insertText", {"text": text})

    def screenshot(self, full_page: bool = True) -> bytes:
        return base64.b64decode(
            self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page})[
                "data"
            ]
        )

    def requests(self) -> list[str]:
        """URLs of every request the page made since it was opened."""
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self.out, self.inp, self.stderr):
            f.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
