"""Screenshot of an `autoaug report` HTML file (docs/report.png), taken in headless Chromium.

    autoaug report --name first --out report.html
    python docs/report_screenshot.py report.html docs/report.png [--chromium /usr/bin/chromium]

Needs Playwright (`pip install -e '.[test]'`) and a Chromium binary (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1300)
    parser.add_argument("--height", type=int, default=2600, help="height of the page top that is captured")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.report.resolve().as_uri(), wait_until="load")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        page.screenshot(path=str(args.out), full_page=False)
        browser.close()


if __name__ == "__main__":
    main()
