"""Validation results read offline: headless Chromium opens Stillhouse's validation page with every outside
request routed to a recording proxy on 127.0.0.1 (the network, as far as the browser knows): none arrives, and
the rendered page has its status column filled. GE's own Data Docs index, opened the same way, sends requests to
CDNs: the control that shows the proxy sees what a page would fetch."""

from __future__ import annotations

import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def _chromium() -> str:
    for name in ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine (scripts/test.sh installs Debian's `chromium` where it can)")


class _RecordingProxy:
    """Answers every request (plain or CONNECT) with 502 and remembers its target."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _refuse(self):
                seen.append(self.path)
                self.send_response(502)
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_CONNECT = _refuse

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


# Chromium's own services (network time, component and variations updates): not requests of the page.
_BROWSER_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")


def _page_requests(seen: list[str]) -> list[str]:
    from urllib.parse import urlsplit

    hosts = [(urlsplit(t).hostname if "://" in t else t.split(":")[0]) or "" for t in seen]
    return [t for t, host in zip(seen, hosts) if not host.endswith(_BROWSER_HOSTS)]


def _render(chromium: str, page, proxy: _RecordingProxy, tmp_path) -> str:
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--proxy-server=http://{proxy.address}", "--proxy-bypass-list=<-loopback>", f"--user-data-dir={tmp_path}",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_validation_page_renders_with_no_network_and_ge_data_docs_do_not(tmp_path):
    import great_expectations.expectations as E

    from stillhouse.validate.runner import Check, run_suite

    chromium = _chromium()
    frame = pd.DataFrame({"text": ["a card was lost", "a fee was charged", "  "], "label": ["card", "fee", "fee"]})
    checks = [Check(E.ExpectColumnValuesToNotBeNull(column="text"), "no missing text"),
              Check(E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=3), "texts have 3+ characters")]
    result = run_suite("seed", frame, checks, tmp_path / "validation")
    proxy = _RecordingProxy()
    try:
        dom = _render(chromium, tmp_path / "validation" / "seed.html", proxy, tmp_path / "profile-1")
        assert _page_requests(proxy.seen) == []  # nothing the page asked for left the machine
        assert dom.count('<span class="ok">passed</span>') == 1 and dom.count('<span class="fail">failed</span>') == 1
        assert "texts have 3+ characters" in dom and result.page_path.endswith("seed.html")
        _render(chromium, tmp_path / "validation" / "data_docs" / "index.html", proxy, tmp_path / "profile-2")
        assert any("cdn" in target or "unpkg" in target for target in _page_requests(proxy.seen)), proxy.seen
    finally:
        proxy.close()

