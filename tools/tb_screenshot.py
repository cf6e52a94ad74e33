"""Screenshot a TensorBoard page in headless Chromium after running a little JavaScript in it (a click, a selection).

Chromium's own ``--screenshot`` cannot click, so this drives it over the DevTools protocol with
nothing but the standard library (a minimal WebSocket client)::

    python tools/tb_screenshot.py "http://127.0.0.1:6123/#graphs&run=run" out.png --js "..." --size 1400,900

Used for docs/dashboard-graphs-tab.png (a node selected, its attributes in the info card) and
docs/dashboard-model-graph.png (Images with "Show actual image size").
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request

#: finds elements through every shadow root: deep(selector) -> list
DEEP = """
function deep(sel, root = document, out = []) {
  root.querySelectorAll(sel).forEach(e => out.push(e));
  root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(sel, e.shadowRoot, out); });
  return out;
}
"""


class _Socket:
    """Just enough of RFC 6455 for DevTools: masked text frames out, unmasked frames in."""

    def __init__(self, url: str):
        host_port, path = url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        self.next_id = 0

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            data += chunk
        return data

    def _frame(self) -> bytes:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        payload = self._read(n)
        return payload if b0 & 0x80 else payload + self._frame()

    def call(self, method: str, **params):
        self.next_id += 1
        data = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536
                                else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        while True:
            message = json.loads(self._frame())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                return message["result"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("output")
    p.add_argument("--js", default="", help="JavaScript run after the page settles; deep(selector) is defined")
    p.add_argument("--size", default="1400,900")
    p.add_argument("--settle", type=float, default=8.0, help="seconds to wait after loading and after the script")
    p.add_argument("--port", type=int, default=9333)
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split(","))
    profile = tempfile.mkdtemp(prefix="tb-shot-")
    browser = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         f"--window-size={width},{height}", f"--remote-debugging-port={args.port}", "--remote-debugging-address=127.0.0.1",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{args.port}/json/list", timeout=2))
                page = next(t for t in pages if t["type"] == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.3)
        ws = _Socket(page["webSocketDebuggerUrl"])
        ws.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        ws.call("Page.navigate", url=args.url)
        time.sleep(args.settle)
        if args.js:
            result = ws.call("Runtime.evaluate", expression=DEEP + args.js, returnByValue=True)
            print("script:", json.dumps(result.get("result", {}).get("value")))
            time.sleep(args.settle)
        shot = ws.call("Page.captureScreenshot", format="png")
        with open(args.output, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(f"wrote {args.output}")
    finally:
        browser.terminate()
        browser.wait(timeout=30)


if __name__ == "__main__":
    main()
