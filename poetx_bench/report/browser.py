"""Open a rendered report in a real headless browser (Chromium): a screenshot of its first screen, and a
check that every <img> in the page decoded (naturalWidth > 0), which a file-exists test cannot see.

Used by `python -m poetx_bench.report.browser REPORT_DIR` and by tests/test_report_browser.py (skipped
where no Chromium is installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files"]
_CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images).map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0,
                                                      width: i.naturalWidth, height: i.naturalHeight}));
  const pre = document.createElement("pre"); pre.id = "poetx-image-check";
  pre.textContent = JSON.stringify(imgs); document.body.appendChild(pre);
});
</script>"""


def find_browser() -> str | None:
    """The first Chromium-family executable on PATH (or $POETX_BROWSER)."""
    explicit = os.environ.get("POETX_BROWSER")
    if explicit:
        return shutil.which(explicit)
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run the browser in its own session with a throw-away profile; on timeout kill the whole group
    (Chromium's helpers too) and raise RuntimeError."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([browser, *_FLAGS, f"--user-data-dir={profile}", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"{browser} did not finish within {timeout:g} s") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def image_check(html: Path, browser: str, timeout: float = 120) -> list[dict]:
    """Every image of `html` as the browser loaded it: src, ok (decoded), width, height."""
    html = html.resolve()
    text = html.read_text()
    text = text.replace("</body>", _CHECK + "</body>") if "</body>" in text else text + _CHECK
    # a uniquely named copy beside it (relative figure paths resolve), removed whatever happens
    fd, name = tempfile.mkstemp(prefix=f".{html.stem}-", suffix=".image-check.html", dir=html.parent)
    probe = Path(name)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        proc = _run(browser, ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], timeout)
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="poetx-image-check">(.*?)</pre>', proc.stdout, re.S)
    if not found:
        raise RuntimeError(f"{browser} did not run the page's check (exit {proc.returncode}): {proc.stderr[-500:]}")
    import html as _html

    return json.loads(_html.unescape(found.group(1)))


def screenshot(html: Path, out_png: Path, browser: str, size: tuple[int, int] = (1280, 900),
               timeout: float = 120) -> Path:
    """A PNG of the page's first screen at `size` (width, height)."""
    out_png = out_png.resolve()
    out_png.unlink(missing_ok=True)  # never mistake an old screenshot for this run's
    proc = _run(browser, [f"--window-size={size[0]},{size[1]}", f"--screenshot={out_png}",
                          "--virtual-time-budget=10000", html.resolve().as_uri()], timeout)
    if not out_png.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}")
    return out_png


def main(argv: list[str] | None = None) -> int:
    """`python -m poetx_bench.report.browser DIR...`: screenshot DIR/report.html to DIR/screenshot.png and
    check its images; exit 1 when an image did not decode or a page has none, 2 on bad input, no browser
    or a browser failure."""
    dirs = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not dirs:
        print("usage: python -m poetx_bench.report.browser REPORT_DIR [REPORT_DIR ...]", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print(f"error: no browser found (tried {', '.join(BROWSERS)}; set POETX_BROWSER)", file=sys.stderr)
        return 2
    bad = 0
    for d in dirs:
        html = d / "report.html"
        if not html.is_file():
            print(f"error: {html}: not a file", file=sys.stderr)
            return 2
        try:
            images = image_check(html, browser)
            png = screenshot(html, d / "screenshot.png", browser)
        except RuntimeError as exc:
            print(f"error: {html}: {exc}", file=sys.stderr)
            return 2
        broken = [(i["src"] or "")[:60] for i in images if not i["ok"]]
        bad += len(broken) + (not images)
        print(f"{html}: {len(images)} images, {len(broken)} not decoded{': ' + ', '.join(broken) if broken else ''}"
              f"{' (a report without figures)' if not images else ''}; first screen -> {png}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
