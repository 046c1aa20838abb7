"""Open a page in headless Chromium, check what it rendered, take a screenshot.

Drives Debian's ``chromium`` through the Chrome DevTools protocol over a pipe
(``--remote-debugging-pipe``: JSON messages separated by NUL bytes on file descriptors 3 and 4),
so it needs nothing beyond the browser and the standard library. Used by the test of
``report.html`` and to make the screenshot in the docs::

    python -m softfloor.browser build/demo/report.html docs/img/report.png

:func:`render` returns a :class:`Page`: the console errors and uncaught exceptions the page
raised, the ``<section>`` elements it rendered (id, heading, size), the images that failed to
decode, and the screenshot's path.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Flags for a closed network and a container: no sandbox (root), no GPU, no background
#: connections (refused here anyway), a fresh profile per run (``--user-data-dir`` added).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
         "--remote-debugging-pipe")
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserMissing(RuntimeError):
    """No Chromium on PATH."""


class BrowserError(RuntimeError):
    """The browser failed, or did not answer in time."""


def find_chromium() -> str:
    """Path of a Chromium (``SOFTFLOOR_CHROMIUM``, else the first of :data:`CANDIDATES`)."""
    env = os.environ.get("SOFTFLOOR_CHROMIUM")
    for name in ((env,) if env else CANDIDATES):
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing("Chromium not found: apt-get install chromium (or set SOFTFLOOR_CHROMIUM)")


@dataclass
class Page:
    """What a page rendered."""
    url: str
    title: str
    sections: list = field(default_factory=list)   # {"id", "heading", "width", "height"}
    console_errors: list = field(default_factory=list)
    broken_images: list = field(default_factory=list)
    width: int = 0
    height: int = 0
    screenshot: str | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"{self.url}: {self.title!r}, {len(self.sections)} sections, "
                f"{len(self.console_errors)} console errors, {len(self.broken_images)} broken "
                f"images, {self.width}x{self.height} px, {self.seconds:.1f} s")


class _Pipe:
    """The DevTools pipe: ``send`` writes a command, ``call`` waits for its answer; events are
    kept in order in ``events``."""

    def __init__(self, to_browser: int, from_browser: int):
        self.w, self.r = os.fdopen(to_browser, "wb", buffering=0), from_browser
        self.answers: queue.Queue = queue.Queue()
        self.events: list = []
        self.next_id = 0
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self.answers.put(None)  # the browser went away
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                m = json.loads(msg)
                if "id" in m:
                    self.answers.put(m)
                else:
                    with self.lock:
                        self.events.append(m)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.answers.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BrowserError(f"no answer to {method} in {timeout:.0f} s") from None
            if m is None:
                raise BrowserError(f"the browser exited during {method}")
            if m["id"] == self.next_id:
                if "error" in m:
                    raise BrowserError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for e in self.events:
                    if e.get("method") == method:
                        return e
            time.sleep(0.02)
        raise BrowserError(f"no {method} in {timeout:.0f} s")


_PROBE = """(() => {
  const secs = [...document.querySelectorAll('section')].map(s => {
    const r = s.getBoundingClientRect();
    const h = s.querySelector('h2');
    return {id: s.id, heading: h ? h.textContent.trim() : '', width: Math.round(r.width),
            height: Math.round(r.height)};
  });
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
    .map(i => i.alt || i.src.slice(0, 60));
  return JSON.stringify({title: document.title, sections: secs, broken: broken,
    width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight});
})()"""


def _console_errors(events: list) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console." + p["type"] + ": " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + (d.get("exception", {}).get("description")
                                        or d.get("text", "")))
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            en = p["entry"]
            out.append(f"{en.get('source')}: {en.get('text')} {en.get('url', '')}".strip())
    return out


def render(url_or_path: str | os.PathLike, screenshot: str | os.PathLike | None = None,
           width: int = 1100, timeout: float = 60.0) -> Page:
    """Load a page (a file path or URL) in headless Chromium, ``width`` CSS pixels wide; return
    what it rendered and write a full-page PNG screenshot to ``screenshot`` if given."""
    t0 = time.monotonic()
    exe = find_chromium()
    url = str(url_or_path)
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    cmd_r, cmd_w = os.pipe()   # we write commands, the browser reads them on fd 3
    out_r, out_w = os.pipe()   # the browser writes answers on fd 4
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, out_w)]

    def child_fds() -> None:
        os.dup2(high[0], 3)
        os.dup2(high[1], 4)

    profile = tempfile.mkdtemp(prefix="softfloor-chromium-")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}",
                             f"--window-size={width},900", "about:blank"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, pass_fds=(3, 4), preexec_fn=child_fds)
    for fd in (cmd_r, out_w, *high):
        os.close(fd)
    pipe = _Pipe(cmd_w, out_r)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        sid = pipe.call("Target.attachToTarget", {"targetId": target["targetId"],
                                                  "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            pipe.call(f"{domain}.enable", session=sid)
        pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, session=sid)
        nav = pipe.call("Page.navigate", {"url": url}, session=sid, timeout=timeout)
        if nav.get("errorText"):
            raise BrowserError(f"cannot open {url}: {nav['errorText']}")
        pipe.wait_event("Page.loadEventFired", timeout=timeout)
        probe = json.loads(pipe.call("Runtime.evaluate", {"expression": _PROBE,
                                                          "returnByValue": True},
                                     session=sid)["result"]["value"])
        page = Page(url, probe["title"], probe["sections"], [], probe["broken"],
                    probe["width"], probe["height"])
        if screenshot is not None:
            pipe.call("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": page.height, "deviceScaleFactor": 1,
                "mobile": False}, session=sid)
            shot = pipe.call("Page.captureScreenshot", {"format": "png",
                                                        "captureBeyondViewport": True},
                             session=sid, timeout=timeout)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            page.screenshot = str(screenshot)
        time.sleep(0.1)  # late console messages
        with pipe.lock:
            page.console_errors = _console_errors(pipe.events)
        try:
            pipe.call("Browser.close", timeout=5)
        except BrowserError:
            pass
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pipe.w.close()
        os.close(out_r)
        shutil.rmtree(profile, ignore_errors=True)
    page.seconds = time.monotonic() - t0
    return page


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m softfloor.browser", description=__doc__.splitlines()[0])
    ap.add_argument("page", help="HTML file or URL")
    ap.add_argument("screenshot", nargs="?", help="PNG to write")
    ap.add_argument("--width", type=int, default=1100, help="CSS pixels (default 1100)")
    args = ap.parse_args(argv)
    page = render(args.page, args.screenshot, args.width)
    print(page)
    for s in page.sections:
        print(f"  section #{s['id']}: {s['heading']!r} {s['width']}x{s['height']}")
    for e in page.console_errors:
        print(f"  console error: {e}")
    return 1 if page.console_errors or page.broken_images else 0


if __name__ == "__main__":
    raise SystemExit(main())
