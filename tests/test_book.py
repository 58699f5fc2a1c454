"""The built book, opened page by page in headless Chromium with the network cut off.

A session fixture builds the book with the command of `make book`, serves `_build/html` on
127.0.0.1 and opens it in Chromium through Playwright. Every request to another host is
aborted, so the checks below prove that the book works offline. On every page:

- the title is set;
- every image loaded (the logo included) and the favicon is served;
- math is typeset: no raw ``$$``, ``$\\``, ``\\(``, ``\\[``, ``\\begin{`` or TeX command
  (``\\eta``) in the text, with every collapsed solution and hidden block opened, every
  ``.math`` element holds MathJax output, MathJax reported no TeX error, and no display
  equation is cut off at the edge of the text column (at a 1280-pixel-wide window);
- no JavaScript error, no console error, no failed or 4xx/5xx request to the server, and no
  attempt to reach another host;
- the sidebar lists every entry of `_toc.yml`, with its title, in order, under its part.

Pages opened: every page `_toc.yml` lists, plus the pages Sphinx generates (genindex,
py-modindex, search) because the theme links them from every page and they carry the same
sidebar, logo and scripts; a broken asset shows there as much as anywhere. `index.html` is only
a redirect to the root page, so it is checked for that. A separate test checks that no other
HTML page was built, so nothing is left unchecked. The search page is also made to search, to
show that search works offline.

Screenshots of the root page and of one chapter (the first notebook in the TOC, or the notation
page while there is none) go to `screenshots/` for a human to look at.

Chromium is found from `D2LBN_CHROMIUM`, then `chromium`, `chromium-browser`, `google-chrome`
on PATH, then the usual macOS application paths. Without one the test fails and says how to
install it.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import yaml

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "screenshots"
TOC_PATH = ROOT / "_toc.yml"

# Pages Sphinx writes on its own, next to the pages of the TOC.
GENERATED_PAGES = ["genindex.html", "py-modindex.html", "search.html"]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MACOS_BROWSERS = [
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
]
INSTALL_HINT = (
    "The book test opens the built book in Chromium and found none. Install it "
    "(Debian: `sudo apt-get install chromium`; Ubuntu: `sudo apt-get install chromium-browser`; "
    "macOS: Google Chrome), or point D2LBN_CHROMIUM at a Chromium or Chrome executable."
)


# ---------------------------------------------------------------------------------------------
# The table of contents


@dataclass
class TocEntry:
    docname: str  # source path without extension, as in _toc.yml
    caption: str | None  # the part it belongs to; None for the root page
    number: int | None = None  # the chapter number Sphinx gives it in a `numbered: true` part

    @property
    def title(self) -> str:
        """The sidebar's text: the source's first heading, after its number in a numbered part."""
        heading = first_heading(self.docname)
        return heading if self.number is None else f"{self.number}. {heading}"


def first_heading(docname: str) -> str:
    """The first level-1 heading of a page's source: what Sphinx uses as its title."""
    md, nb = ROOT / f"{docname}.md", ROOT / f"{docname}.ipynb"
    if md.exists():
        lines = md.read_text(encoding="utf8").splitlines()
    elif nb.exists():
        import nbformat

        notebook = nbformat.read(nb, as_version=4)
        lines = [
            line
            for cell in notebook.cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
        ]
    else:
        raise AssertionError(f"_toc.yml lists {docname!r}, but neither {md.name} nor {nb.name} exists")
    for line in lines:
        if line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{docname} has no '# Title' heading for the sidebar")


def toc_entries() -> list[TocEntry]:
    """Every page of _toc.yml in reading order: the root, then each part's chapters and sections.

    Reads only _toc.yml (titles are read when asked for), so that collecting these tests works
    even when an entry is broken; tests/test_notebooks.py reports that.
    """
    toc = yaml.safe_load(TOC_PATH.read_text(encoding="utf8"))
    entries = [TocEntry(toc["root"], None)]

    numbered = 0  # chapters of numbered parts are numbered on from one part to the next

    def walk(items: list[dict], caption: str | None, numbers: bool = False) -> None:
        nonlocal numbered
        for item in items:
            number = None
            if numbers:
                numbered += 1
                number = numbered
            entries.append(TocEntry(item["file"], caption, number))
            walk(item.get("sections", []), caption)

    for part in toc.get("parts", []):
        walk(part["chapters"], part["caption"], bool(part.get("numbered")))
    walk(toc.get("chapters", []), None)
    return entries


def pages_to_check() -> list[str]:
    return [f"{entry.docname}.html" for entry in toc_entries()] + GENERATED_PAGES


# ---------------------------------------------------------------------------------------------
# Build, serve, browse


def book_command() -> list[str]:
    """The `make book` recipe, with the jupyter-book of the running interpreter."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf8")
    match = re.search(r"^book:.*\n\t(.*jupyter-book build .*)$", makefile, re.MULTILINE)
    assert match, "Makefile has no `book:` target whose recipe runs `jupyter-book build`"
    args = shlex.split(match.group(1))
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    return [str(jupyter_book)] + args[1:]


@pytest.fixture(scope="session")
def built_book() -> Path:
    command = book_command()
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # Sphinx colours its messages
        tail = "\n".join(log.splitlines()[-60:])
        pytest.fail(
            f"`{shlex.join(command)}` failed with exit code {result.returncode} after "
            f"{elapsed:.0f} s; the end of its log:\n{tail}",
            pytrace=False,
        )
    return HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def server(built_book: Path):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def find_chromium() -> str | None:
    chosen = os.environ.get("D2LBN_CHROMIUM")
    if chosen:
        if not (Path(chosen).is_file() and os.access(chosen, os.X_OK)):
            pytest.fail(f"D2LBN_CHROMIUM={chosen!r} is not an executable file", pytrace=False)
        return chosen
    candidates = [shutil.which(name) or "" for name in ("chromium", "chromium-browser", "google-chrome")]
    candidates += MACOS_BROWSERS
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class Browser:
    context: object
    blocked: list[str] = field(default_factory=list)  # requests to other hosts, aborted


@pytest.fixture(scope="session")
def browser(server: str, tmp_path_factory: pytest.TempPathFactory):
    executable = find_chromium()
    if executable is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        state = Browser(context)

        def only_localhost(route, request) -> None:
            if urlparse(request.url).hostname == "127.0.0.1" or request.url.startswith("data:"):
                route.continue_()
            else:
                state.blocked.append(request.url)
                route.abort("internetdisconnected")

        context.route("**/*", only_localhost)
        yield state
        context.close()


# ---------------------------------------------------------------------------------------------
# What one page must satisfy

WAIT_FOR_MATHJAX = """async () => {
    if (!document.querySelector('script[src*="mathjax"]')) return 'no mathjax';
    const start = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
        if (Date.now() - start > 15000) return 'MathJax did not start';
        await new Promise(r => setTimeout(r, 50));
    }
    await MathJax.startup.promise;
    return 'typeset';
}"""

WAIT_FOR_IMAGES = """async () => {
    const images = Array.from(document.images);
    for (const img of images) img.loading = 'eager';
    await Promise.all(images.map(img => img.complete ? null :
        new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
    return images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth}));
}"""

# Visible text outside code, scripts and MathJax output: raw TeX left there means math failed.
VISIBLE_PROSE = """() => {
    const skip = 'PRE, CODE, SCRIPT, STYLE, TEXTAREA, MJX-CONTAINER, MJX-ASSISTIVE-MML';
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const parts = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const el = node.parentElement;
        if (!el || el.closest(skip)) continue;
        if (el.checkVisibility && !el.checkVisibility()) continue;
        parts.push(node.textContent);
    }
    return parts.join(' ');
}"""

# Open what a reader can open: toggled admonitions (the exercises' solutions) and <details>
# blocks (hidden code cells), so that what they hold is checked as well.
EXPAND_HIDDEN = """() => {
    const buttons = Array.from(document.querySelectorAll('button.toggle-button[aria-expanded="false"]'));
    buttons.forEach(button => button.click());
    document.querySelectorAll('details:not([open])').forEach(d => { d.open = true; });
    return buttons.length;
}"""

# Raw TeX in prose: a display or inline delimiter, or a backslash command such as \eta.
RAW_TEX = re.compile(r"\$\$|\$\\|\\\(|\\\[|\\begin\{|\\[A-Za-z]{2,}")

MATH_STATUS = """() => {
    const math = Array.from(document.querySelectorAll('.math'));
    return {
        math: math.length,
        untypeset: math.filter(el => !el.querySelector('mjx-container')).map(el => el.textContent.slice(0, 80)),
        containers: document.querySelectorAll('mjx-container').length,
        errors: Array.from(document.querySelectorAll('mjx-merror')).map(el => el.getAttribute('data-mjx-error') || el.textContent),
        // Display equations wider than the text column (cut off, or scrolling sideways).
        overflowing: Array.from(document.querySelectorAll('mjx-container[display="true"]'))
            .filter(eq => eq.scrollWidth > eq.clientWidth + 1 ||
                          eq.getBoundingClientRect().right > eq.parentElement.getBoundingClientRect().right + 1)
            .map(eq => (eq.closest('.math') || eq).id || eq.textContent.slice(0, 80)),
    };
}"""

SIDEBAR = """() => {
    const nav = document.querySelector('nav.bd-docs-nav');
    if (!nav) return null;
    const links = [];
    let caption = null;
    for (const el of nav.querySelectorAll('p.caption, li[class^="toctree-l"] > a')) {
        if (el.matches('p.caption')) { caption = el.textContent.trim(); continue; }
        links.push({href: el.href, title: el.textContent.trim(), caption: caption});
    }
    return links;
}"""

FAVICON = """async () => {
    const link = document.querySelector('link[rel~="icon"]');
    if (!link) return 'no <link rel="icon">';
    const response = await fetch(link.href);
    const type = response.headers.get('content-type') || '';
    return response.ok && type.startsWith('image/') ? 'ok' : `${link.href}: ${response.status} ${type}`;
}"""


def page_url(server: str, path: str) -> str:
    return urljoin(server, path)


def check_page(browser: Browser, server: str, path: str, screenshot: Path | None = None) -> list[str]:
    """Open one page and return what is wrong with it (an empty list when nothing is)."""
    problems: list[str] = []
    page = browser.context.new_page()
    blocked_before = len(browser.blocked)

    def on_console(message) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def on_failed(request) -> None:
        if urlparse(request.url).hostname == "127.0.0.1":
            problems.append(f"request failed: {request.url} ({request.failure})")

    def on_response(response) -> None:
        if urlparse(response.url).hostname == "127.0.0.1" and response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    try:
        page.goto(page_url(server, path), wait_until="load")

        title = page.title().strip()
        if not title or "<no title>" in title:
            problems.append(f"no page title (got {title!r})")

        mathjax = page.evaluate(WAIT_FOR_MATHJAX)
        if mathjax == "MathJax did not start":
            problems.append("the page loads MathJax, but MathJax did not start")

        for image in page.evaluate(WAIT_FOR_IMAGES):
            if image["width"] == 0:
                problems.append(f"image did not load: {image['src']}")
        logos = page.locator("img.logo__image").count()
        if logos == 0:
            problems.append("no logo image in the sidebar")
        favicon = page.evaluate(FAVICON)
        if favicon != "ok":
            problems.append(f"favicon: {favicon}")

        if screenshot is not None:  # as a reader first sees the page, solutions collapsed
            screenshot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)

        page.evaluate(EXPAND_HIDDEN)
        prose = " ".join(page.evaluate(VISIBLE_PROSE).split())
        raws = list(RAW_TEX.finditer(prose))
        if raws:
            at = raws[0].start()
            problems.append(
                f"raw math in the text, {len(raws)} times; the first, {raws[0].group()!r}: "
                f"...{prose[max(0, at - 40):at + 60]}..."
            )
        math = page.evaluate(MATH_STATUS)
        if math["math"] and mathjax != "typeset":
            problems.append(f"{math['math']} math elements but MathJax is not loaded ({mathjax})")
        for source in math["untypeset"]:
            problems.append(f"math not typeset: {source}")
        for error in math["errors"]:
            problems.append(f"MathJax error: {error}")
        for equation in math["overflowing"]:
            problems.append(f"display equation wider than the text column: {equation}")

        check_sidebar(page.evaluate(SIDEBAR), page.url, problems)
    finally:
        page.close()
    problems += [f"tried to reach another host: {url}" for url in browser.blocked[blocked_before:]]
    return problems


def check_sidebar(links: list[dict] | None, url: str, problems: list[str]) -> None:
    """The sidebar lists exactly the TOC's entries, in order, with their titles and parts."""
    if links is None:
        problems.append("no sidebar navigation (nav.bd-docs-nav)")
        return
    # A link to the current page may be "#"; resolve it to the page itself.
    here = url.split("#")[0]
    found = [
        (urlparse(link["href"].split("#")[0] or here).path, link["title"], link["caption"])
        for link in links
    ]
    server_root = urlparse(here)._replace(path="/").geturl()
    expected = [
        (urlparse(urljoin(server_root, f"{e.docname}.html")).path, e.title, e.caption)
        for e in toc_entries()
    ]
    if found != expected:
        missing = [e for e in expected if e not in found]
        extra = [f for f in found if f not in expected]
        problems.append(
            "the sidebar does not match _toc.yml: "
            f"missing {missing}, unexpected {extra}" + ("" if missing or extra else ", order differs")
        )


# ---------------------------------------------------------------------------------------------
# The tests


def screenshot_pages() -> dict[str, str]:
    """The root page and one chapter: the first notebook in the TOC, else the notation page."""
    entries = toc_entries()
    chapters = [e.docname for e in entries if e.docname.startswith("notebooks/")]
    chapter = chapters[0] if chapters else "book/notation"
    return {f"{entries[0].docname}.html": entries[0].docname, f"{chapter}.html": chapter}


@pytest.mark.parametrize("path", pages_to_check())
def test_page(browser: Browser, server: str, path: str) -> None:
    shots = screenshot_pages()
    screenshot = SCREENSHOTS / (shots[path].replace("/", "_") + ".png") if path in shots else None
    problems = check_page(browser, server, path, screenshot)
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)


def test_every_built_page_is_checked(built_book: Path) -> None:
    built = {
        p.relative_to(built_book).as_posix()
        for p in built_book.rglob("*.html")
        if p.relative_to(built_book).parts[0] not in ("_static", "_sources")
    }
    unchecked = built - set(pages_to_check()) - {"index.html"}
    assert not unchecked, (
        f"pages built but not in _toc.yml, so the browser test does not open them: {sorted(unchecked)}; "
        "list them in _toc.yml, or check only_build_toc_files in _config.yml"
    )
    missing = set(pages_to_check()) - built
    assert not missing, f"pages of _toc.yml that the build did not produce: {sorted(missing)}"


def test_index_redirects_to_root(browser: Browser, server: str) -> None:
    root = toc_entries()[0].docname
    page = browser.context.new_page()
    try:
        page.goto(server, wait_until="load")
        page.wait_for_url(f"**/{root}.html", timeout=10_000)
    finally:
        page.close()


def test_search_works_offline(browser: Browser, server: str) -> None:
    page = browser.context.new_page()
    try:
        page.goto(page_url(server, "search.html?q=momentum"), wait_until="load")
        results = page.locator("#search-results ul.search li")
        results.first.wait_for(timeout=15_000)
        hrefs = [a.get_attribute("href") for a in page.locator("#search-results ul.search li a").all()]
        assert any("notation" in (href or "") for href in hrefs), f"searching 'momentum' found {hrefs}"
    finally:
        page.close()
