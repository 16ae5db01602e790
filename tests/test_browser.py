"""The rendered HTML book in a real browser (Debian's chromium driven by Playwright), served on 127.0.0.1.

Every request to another host is blocked and recorded: the report must open offline. Full-page screenshots of
every page go to ``tests/_screenshots/<profile>/`` (gitignored; the path is printed), where a reader can look.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

SCREENSHOTS = Path(__file__).parent / "_screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _launch(playwright):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does it)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def served(folder: Path):
    """The base URL of ``folder`` served over HTTP on 127.0.0.1, as GitHub Pages would serve the book."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module", params=["rendered_default", "rendered_statmap"])
def site(request):
    """(base URL, rendered book): the book's ``_book`` folder served by a local HTTP server."""
    book = request.getfixturevalue(request.param)
    with served(book.book) as base:
        yield base, book


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = _launch(p)
        yield b
        b.close()


class Page:
    """A browser page whose requests outside 127.0.0.1 are blocked and recorded, with its console errors."""

    def __init__(self, browser, base: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.outside: list[str] = []
        self.errors: list[str] = []
        host = urlparse(base).netloc

        def route(r):
            url = urlparse(r.request.url)
            if url.scheme in ("data", "blob", "about") or url.netloc == host:
                r.continue_()
            else:
                self.outside.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self):
        self.context.close()


def _pages(book) -> list[str]:
    return [p.relative_to(book.book).as_posix() for p in book.html_pages()]


def load_every_page(base: str, book, browser) -> list[str]:
    """Open every HTML page of ``book`` served at ``base``, screenshot it (full page) into
    ``tests/_screenshots/<profile>/``, and return what went wrong: images that did not load, requests to other
    hosts, console errors."""
    out = SCREENSHOTS / book.profile
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    problems = []
    for rel in _pages(book):
        p = Page(browser, base)
        try:
            p.page.goto(f"{base}/{rel}", wait_until="networkidle")
            p.page.screenshot(path=str(out / (rel.replace("/", "_").removesuffix(".html") + ".png")),
                              full_page=True)
            broken = p.page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                                     ".map(i => i.getAttribute('src'))")
            if broken:
                problems.append(f"{rel}: images that did not load: {broken}")
            # a table wider than the text column runs under the table of contents (the cluster tables did);
            # a value that must stay on one line (a z cut-off, peak coordinates) is one line box
            wide = p.page.evaluate("() => { const m = document.querySelector('main'); return m ? [...m.querySelectorAll"
                                   "('table')].filter(t => t.getBoundingClientRect().width > m.clientWidth + 1)"
                                   ".map(t => [t.closest('[id]')?.id, Math.round(t.getBoundingClientRect().width),"
                                   " m.clientWidth]) : [] }")
            if wide:
                problems.append(f"{rel}: tables wider than the text column (id, px, column px): {wide}")
            wrapped = p.page.evaluate("() => [...document.querySelectorAll('main .nowrap')]"
                                      ".filter(s => s.getClientRects().length > 1).map(s => s.textContent)")
            if wrapped:
                problems.append(f"{rel}: values wrapped across lines: {wrapped}")
            if p.outside:
                problems.append(f"{rel}: requests to other hosts: {sorted(set(p.outside))}")
            if p.errors:
                problems.append(f"{rel}: console errors: {p.errors}")
        finally:
            p.close()
    print(f"\nscreenshots of the {book.profile} book: {out}")
    return problems


def search_results(base: str, browser, word: str) -> list[str]:
    """The texts of the search box's results for ``word``, from the book's front page."""
    p = Page(browser, base)
    try:
        page = p.page
        page.goto(f"{base}/index.html", wait_until="networkidle")
        page.locator("#quarto-search .aa-DetachedSearchButton, #quarto-search button, .aa-DetachedSearchButton"
                     ).first.click()
        page.locator("input.aa-Input").first.fill(word)
        page.wait_for_selector(".aa-Item", timeout=10000)
        items = page.locator(".aa-Item")
        texts = [items.nth(i).inner_text() for i in range(items.count())]
        assert not p.outside and not p.errors, (p.outside, p.errors)
        return texts
    finally:
        p.close()


def test_every_page_loads_offline_without_console_errors(site, browser):
    base, book = site
    problems = load_every_page(base, book, browser)
    assert not problems, "\n".join(problems)


def test_table_of_contents_and_cross_references_navigate(site, browser):
    base, book = site
    p = Page(browser, base)
    try:
        page = p.page
        page.goto(f"{base}/index.html", wait_until="networkidle")
        # the sidebar lists every chapter; following one opens it
        links = page.locator("#quarto-sidebar a.sidebar-link")
        assert links.count() >= 5
        link = page.locator("#quarto-sidebar a.sidebar-link[href*='03-results']").first
        link.click()
        page.wait_for_url("**/03-results.html*")
        assert "Results" in page.locator("h1").first.inner_text()
        # the page's own table of contents jumps to its sections
        toc = page.locator("#TOC #toc-sec-clusters")
        toc.click()
        page.wait_for_function("location.hash === '#sec-clusters'")
        # a cross-reference in the prose goes to its figure or table
        # (Quarto's script makes the links absolute: match on the fragment)
        xref = page.locator("main a.quarto-xref[href*='#fig-'], main a.quarto-xref[href*='#tbl-']").first
        target = "#" + xref.get_attribute("href").split("#", 1)[1]
        xref.click()
        page.wait_for_function(f"location.hash === {target!r}")
        assert page.locator(target).count() == 1
        assert not p.outside and not p.errors, (p.outside, p.errors)
    finally:
        p.close()


def test_search_finds_a_word_of_the_report(site, browser):
    base, _ = site
    found = search_results(base, browser, "Harvard")
    assert any("Harvard" in text for text in found), found


def _canvas_digest(frame) -> tuple[str, int]:
    """(SHA-1 of the viewer canvas pixels, number of non-blank pixels)."""
    data = frame.evaluate("""() => {
        const c = document.querySelector('canvas[id^="3Dviewer"]');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0, s = [];
        for (let i = 0; i < px.length; i += 4) { if (px[i + 3] && (px[i] || px[i + 1] || px[i + 2])) n++; }
        for (let i = 0; i < px.length; i += 397) s.push(px[i]);
        return [s.join(','), n];
    }""")
    return hashlib.sha1(data[0].encode()).hexdigest(), data[1]


def test_interactive_viewer_draws_and_follows_a_click(site, browser):
    base, book = site
    p = Page(browser, base)
    try:
        page = p.page
        page.goto(f"{base}/chapters/91-downloads.html", wait_until="networkidle")
        iframe = page.locator("#fig-viewer iframe, iframe[srcdoc]").first
        iframe.scroll_into_view_if_needed()
        frame = iframe.element_handle().content_frame()
        frame.wait_for_selector('canvas[id^="3Dviewer"]')
        frame.wait_for_function("""() => { const c = document.querySelector('canvas[id^="3Dviewer"]');
                                           return c && c.width > 100; }""")
        before, drawn = _canvas_digest(frame)
        assert drawn > 1000, "the viewer canvas is blank"
        canvas = frame.locator('canvas[id^="3Dviewer"]')
        box = canvas.bounding_box()
        canvas.click(position={"x": box["width"] * 0.15, "y": box["height"] * 0.3})
        page.wait_for_timeout(300)
        after, _ = _canvas_digest(frame)
        assert after != before, "a click on the viewer did not move the cross-hair"
        page.screenshot(path=str(SCREENSHOTS / book.profile / "viewer-after-click.png"))
        assert not p.outside and not p.errors, (p.outside, p.errors)
    finally:
        p.close()


# --- the study report (quarto render --profile study; tests/study_render.py) --------------------------------

@pytest.fixture(scope="module")
def study_site(rendered_study):
    """(base URL, rendered study book) served like :func:`site`."""
    with served(rendered_study.book) as base:
        yield base, rendered_study


def test_every_study_page_loads_offline_without_console_errors(study_site, browser):
    base, book = study_site
    problems = load_every_page(base, book, browser)
    assert not problems, "\n".join(problems)


def test_study_sidebar_subject_pages_toc_and_cross_references_navigate(study_site, browser):
    base, book = study_site
    p = Page(browser, base)
    try:
        page = p.page
        page.goto(f"{base}/index.html", wait_until="networkidle")
        # the sidebar lists the chapters and, in the Subjects part, one page per subject
        assert page.locator("#quarto-sidebar a.sidebar-link[href*='subjects/sub-']").count() == 5
        page.locator("#quarto-sidebar a.sidebar-link[href*='03-subjects']").first.click()
        page.wait_for_url("**/03-subjects.html*")
        assert "Subjects" in page.locator("h1").first.inner_text()
        # a subject's name in the subject table opens its page
        page.locator("main table a[href*='sub-02']").first.click()
        page.wait_for_url("**/subjects/sub-02.html*")
        assert "sub-02" in page.locator("h1").first.inner_text()
        # the page's table of contents jumps to its sections
        page.locator("#TOC #toc-sec-sub-02-peaks").click()
        page.wait_for_function("location.hash === '#sec-sub-02-peaks'")
        # the group results: a cross-reference in the prose goes to its figure or table
        page.goto(f"{base}/chapters/study/02-results.html", wait_until="networkidle")
        xref = page.locator("main a.quarto-xref[href*='#fig-group-'], main a.quarto-xref[href*='#tbl-group-']").first
        target = "#" + xref.get_attribute("href").split("#", 1)[1]
        xref.click()
        page.wait_for_function(f"location.hash === {target!r}")
        assert page.locator(target).count() == 1
        assert not p.outside and not p.errors, (p.outside, p.errors)
    finally:
        p.close()


def test_study_search_finds_a_subject_page(study_site, browser):
    base, _ = study_site
    found = search_results(base, browser, "Heschl")
    assert any("Heschl" in text for text in found), found
