"""Load pages of the built docs site (site/, `make docs`) in headless Chromium; exit 1 on any error.
Run: pip install playwright; playwright install chromium; python .ci/site-check.py [--all] [--chromium PATH]
"""

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

SITE = Path(__file__).resolve().parent.parent / "site"
# home, the generated reference, a how-to, and the results pages with plots (peft method zoo, study reports)
DEFAULT_PAGES = [
    "",
    "reference/configuration/",
    "how-to/method/",
    "peft_method_zoo/",
    "peft_method_zoo/full/report/",
    "study/sst2/report/",
]


def serve(site: Path) -> http.server.ThreadingHTTPServer:
    """Serve site/ on a free port in a background thread (port 0: the OS picks one)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        pass


def check_page(page: Page, url: str) -> list[str]:
    """Load one url; return its problems: console and page errors, failed requests, images not loaded."""
    problems: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console error: {msg.text}"))
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url} ({req.failure})"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    response = page.goto(url, wait_until="networkidle")
    status = response.status if response else "no response"
    images = page.eval_on_selector_all(
        "article img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])"
    )
    problems += [f"image not loaded: {src}" for src, loaded in images if not loaded]
    print(f"{url}: HTTP {status}, {len(images)} images, {len(problems)} problems")
    return problems if status == 200 else [f"HTTP {status}", *problems]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pages", nargs="*", default=DEFAULT_PAGES, help="paths in site/ (default: a sample)")
    parser.add_argument("--all", action="store_true", help="every page of the site, not the sample")
    parser.add_argument("--chromium", help="a system Chromium binary (default: playwright's own)")
    args = parser.parse_args()
    if not (SITE / "index.html").exists():
        sys.exit(f"error: no built site at {SITE}: run `make docs` first")
    if args.all:
        folders = sorted(index.parent.relative_to(SITE).as_posix() for index in SITE.rglob("index.html"))
        args.pages = ["" if folder == "." else folder + "/" for folder in folders]
    server = serve(SITE)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    failures = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium)
        for path in args.pages:
            page = browser.new_page()
            for problem in check_page(page, base + path):
                print(f"  {problem}")
                failures += 1
            page.close()
        browser.close()
    server.shutdown()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
