"""The page in a real browser (Playwright + Debian's Chromium): upload, label, heatmap, 3D.

Screenshots land in the test's tmp dir (desktop and phone widths); CI installs
/usr/bin/chromium (.ci/run), elsewhere the test skips when it is missing.
"""

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_app import WBC_EXAMPLE, import_app, serve

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download does not work here: use Debian's Chromium, quietly.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def url():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: the browser test needs Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (requirements-dev.txt)")
    app = import_app()
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def upload(page, url, image):
    """Open the page and drop ``image`` on the input; returns the list that collects page errors."""
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("#cell-image input[type=file]", state="attached", timeout=TIMEOUT_MS)
    page.set_input_files("#cell-image input[type=file]", str(image))
    return errors


def upload_and_wait(page, url, image):
    """Open the page, drop ``image`` on the input, wait for the label and the heatmap."""
    errors = upload(page, url, image)
    page.wait_for_selector("#label [data-testid=label-output-value]", timeout=TIMEOUT_MS)
    page.wait_for_function("() => { const img = document.querySelector('#heatmap img');"
                           " return img && img.complete && img.naturalWidth > 0; }", timeout=TIMEOUT_MS)
    return errors


#: Grey-level standard deviation of a canvas screenshot above which it shows a mesh. An empty
#: Model3D canvas already scores about 5 (its clear colour and edges); the cell mesh scores far more.
DRAWN_SPREAD = 20.0
DRAW_DEADLINE_S = 45.0


def spread_of(element) -> float:
    shot = np.asarray(Image.open(io.BytesIO(element.screenshot())).convert("L"), np.float32)
    return float(shot.std())


def wait_for_drawn(element, *, deadline_s: float = DRAW_DEADLINE_S, poll_ms: int = 250) -> float:
    """Poll ``element``'s screenshot until it clearly shows a drawing or the deadline passes; returns the last spread.

    No fixed sleep: the mesh appears seconds after the tab click, later on a slow machine.
    """
    page = element.owner_frame().page
    end = time.monotonic() + deadline_s
    spread = spread_of(element)
    while spread <= DRAWN_SPREAD and time.monotonic() < end:
        page.wait_for_timeout(poll_ms)
        spread = spread_of(element)
    return spread


def test_blank_canvas_is_not_taken_for_a_mesh(browser, url):
    """The 3D check must fail on a blank canvas: the real page, with an empty canvas of the same size added."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(url)
    page.evaluate("() => { const c = document.createElement('canvas'); c.id = 'blank-canvas'; c.width = 400;"
                  " c.height = 300; c.style.background = '#f4f4f5'; document.body.prepend(c); }")
    blank = page.wait_for_selector("#blank-canvas", timeout=TIMEOUT_MS)
    spread = wait_for_drawn(blank, deadline_s=2.0)
    page.close()
    assert spread <= DRAWN_SPREAD, spread


#: HV_BROWSER_REPEAT=20 runs the 3D test 20 times in one session (the stability check of the flaky-test fix).
REPEAT = range(int(os.environ.get("HV_BROWSER_REPEAT", "1")))


@pytest.mark.parametrize("attempt", REPEAT)
def test_upload_shows_label_heatmap_and_3d(browser, url, tmp_path, attempt):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors = upload_and_wait(page, url, WBC_EXAMPLE)
    # The research-use notice is on the main page, not only in About.
    expect(page.get_by_text("Research use only.").first).to_be_visible()
    labels = import_app().MODELS["wbc"].labels
    assert page.inner_text("#label [data-testid=label-output-value]").strip() in labels
    expect(page.locator("#verdict .hv-verdict")).to_have_class(__import__("re").compile(r"hv-(confident|uncertain)"))
    page.screenshot(path=tmp_path / "classify-desktop.png", full_page=True)

    page.get_by_role("tab", name="3D").click()
    canvas = page.wait_for_selector("#cell3d canvas", timeout=TIMEOUT_MS)
    spread = wait_for_drawn(canvas)
    assert spread > DRAWN_SPREAD, f"the 3D canvas stayed blank (grey-level spread {spread:.1f} <= {DRAWN_SPREAD})"
    page.screenshot(path=tmp_path / "3d-desktop.png", full_page=True)
    assert not errors, errors
    page.close()


def test_phone_width_is_readable(browser, url, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    errors = upload_and_wait(page, url, WBC_EXAMPLE)
    # Nothing scrolls sideways on a phone.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390 + 1
    page.screenshot(path=tmp_path / "classify-phone.png", full_page=True)
    assert not errors, errors
    page.close()


def test_broken_upload_shows_one_clear_error(browser, url, tmp_path):
    """A truncated JPEG gives exactly one error toast that names the file and the problem, and no page error."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(WBC_EXAMPLE).read_bytes()[:800])
    page = browser.new_page()
    errors = upload(page, url, broken)
    page.wait_for_selector(".toast-body", timeout=TIMEOUT_MS)
    # Proving that no second toast comes needs a bounded wait: the request has already answered
    # (the first toast is its reply), so a second one would have to arrive within this window.
    page.wait_for_timeout(3000)
    toasts = page.locator(".toast-body").all_inner_texts()
    page.close()
    assert len(toasts) == 1, toasts
    assert "broken.jpg" in toasts[0] and "truncated" in toasts[0]
    assert not errors, errors


def test_out_of_distribution_upload_shows_no_headline_and_no_heatmap(browser, url, tmp_path):
    """A picture that is not a cell: the verdict says so, no class headline, no heatmap until asked."""
    import hematovision as hv

    y, x = np.mgrid[0:200, 0:200]
    checker = (((x // 10 + y // 10) % 2) * 255).astype(np.uint8)
    photo = tmp_path / "checkerboard.png"
    Image.fromarray(np.dstack([checker, 255 - checker, checker])).save(photo)
    assert hv.load_model("wbc").predict(photo).out_of_distribution, "precondition: the shipped wbc flags this image"
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors = upload(page, url, photo)
    page.wait_for_selector("#verdict .hv-uncertain", timeout=TIMEOUT_MS)
    assert "does not look like the cells" in page.inner_text("#verdict")
    page.wait_for_load_state("networkidle")  # the rest of the event chain (heatmap step) has answered
    assert page.locator("#label [data-testid=label-output-value]").count() == 0, "a class headline is shown"
    assert page.locator("#heatmap img").count() == 0, "a heatmap is drawn over a non-cell image"
    page.locator("#show-cam").click()  # asked for: now it is drawn
    page.wait_for_function("() => { const img = document.querySelector('#heatmap img');"
                           " return img && img.complete && img.naturalWidth > 0; }", timeout=TIMEOUT_MS)
    page.close()
    assert not errors, errors


def test_example_galleries_have_class_captions(browser, url):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(url)
    expect(page.get_by_text("early pre b", exact=True).first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("eosinophil", exact=True).first).to_be_visible(timeout=TIMEOUT_MS)
    page.close()


# --------------------------------------------------------------------------- dark mode

#: WCAG AA contrast for normal text.
MIN_CONTRAST = 4.5
#: HV_DOCS_SCREENSHOTS=1 also writes the dark-mode screenshot that docs/app.md shows.
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "app-dark.png"

# Every element with text in ``selector``: its colour and the first opaque background behind it (CSS computed styles).
TEXT_AND_BACKGROUND = """(selector) => {
  const rows = [];
  for (const root of document.querySelectorAll(selector)) {
    for (const el of [root, ...root.querySelectorAll('*')]) {
      const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
      if (!own) continue;
      let bg = null;
      for (let a = el; a && !bg; a = a.parentElement) {
        const c = getComputedStyle(a).backgroundColor;
        if (c && !/^rgba\\(0, 0, 0, 0\\)$|^transparent$/.test(c)) bg = c;
      }
      rows.push({text: el.textContent.trim().slice(0, 40), color: getComputedStyle(el).color, background: bg,
                 opacity: getComputedStyle(el).opacity});
    }
  }
  return rows;
}"""


BACKGROUND_BEHIND = """(selector) => {
  for (let a = document.querySelector(selector); a; a = a.parentElement) {
    const c = getComputedStyle(a).backgroundColor;
    if (c && !/^rgba\\(0, 0, 0, 0\\)$|^transparent$/.test(c)) return c;
  }
  return 'rgb(255, 255, 255)';
}"""


def _rgb(css: str) -> tuple[float, float, float]:
    """'rgb(1, 2, 3)', 'rgba(1, 2, 3, 1)' or 'color(srgb 0.1 0.2 0.3)' (what color-mix() computes to) -> 0..255."""
    import re

    numbers = [float(v) for v in re.findall(r"[\d.]+", css)]
    if css.startswith("color(srgb"):
        return tuple(255 * v for v in numbers[:3])
    return tuple(numbers[:3])


def _luminance(rgb) -> float:
    c = [v / 255 for v in rgb]
    c = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]


def contrast(a, b) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _checkerboard(folder: Path) -> Path:
    y, x = np.mgrid[0:200, 0:200]
    checker = (((x // 10 + y // 10) % 2) * 255).astype(np.uint8)
    photo = folder / "checkerboard.png"
    Image.fromarray(np.dstack([checker, 255 - checker, checker])).save(photo)
    return photo


@pytest.mark.parametrize("state", ["confident", "uncertain"])
def test_dark_mode_result_card_is_readable(browser, url, tmp_path, state):
    """?__theme=dark: the result card and the research-use notice keep readable text (computed styles and pixels)."""
    image = WBC_EXAMPLE if state == "confident" else _checkerboard(tmp_path)
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors = upload(page, url.rstrip("/") + "/?__theme=dark", image)
    card = page.wait_for_selector(f"#verdict .hv-{state}", timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    assert "dark" in page.evaluate("() => document.body.className"), "the page did not switch to the dark theme"
    # The theme really is dark: what the card sits on (its block's first opaque background) is dark.
    page_bg = _rgb(page.evaluate(BACKGROUND_BEHIND, "#verdict"))
    rows = page.evaluate(TEXT_AND_BACKGROUND, "#verdict .hv-verdict, .hv-notice")
    assert len(rows) >= 3, rows
    for row in rows:
        ratio = contrast(_rgb(row["color"]), _rgb(row["background"]))
        assert ratio * float(row["opacity"]) >= MIN_CONTRAST, f"{row['text']!r}: contrast {ratio:.2f} ({row})"
    # The card belongs to the dark page: no light panel glaring on it.
    card_bg = _rgb(next(r["background"] for r in rows if r["text"] and r["background"]))
    assert _luminance(card_bg) < 0.2, f"the result card stays light in dark mode: {card_bg}"
    # And on the pixels: the card's text stands out from its background in a screenshot.
    shot = np.asarray(Image.open(io.BytesIO(card.screenshot())).convert("RGB"), np.float32)
    background = np.median(shot.reshape(-1, 3), axis=0)
    distance = np.abs(shot - background).sum(axis=2)
    text = shot[distance >= np.percentile(distance, 99)].mean(axis=0)  # the strongest 1 %: glyph cores
    assert contrast(text, background) >= MIN_CONTRAST, (text, background)
    assert _luminance(page_bg) < 0.2
    page.screenshot(path=tmp_path / f"dark-{state}.png")
    if state == "confident" and os.environ.get("HV_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=DOCS_SCREENSHOT)
    page.close()
    assert not errors, errors


# --------------------------------------------------------------------------- the Review tab

#: HV_DOCS_SCREENSHOTS=1 also writes the Review tab screenshot that docs/app.md shows.
REVIEW_SCREENSHOT = DOCS_SCREENSHOT.with_name("review-tab.png")


def open_review(page, url, station_zip):
    """The Review tab with the station zip uploaded; returns the list that collects page errors."""
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("[role=tablist]", timeout=TIMEOUT_MS)
    tab = page.get_by_role("tab", name="Review")
    if not tab.is_visible():  # a phone: Gradio lists the tabs that do not fit under "More tabs"
        page.get_by_label("More tabs").click()
        tab = page.locator(".overflow-dropdown button", has_text="Review")
    tab.click()
    page.wait_for_selector("#review-upload input[type=file]", state="attached", timeout=TIMEOUT_MS)
    page.set_input_files("#review-upload input[type=file]", str(station_zip))
    return errors


def differential_rows(page) -> dict[str, list[str]]:
    """The Review tab's differential table as {class: [cells...]} from the page's text."""
    rows = page.locator("#review-differential [role=row]").all()[1:]  # after the header row
    cells = [[c.inner_text().strip() for c in row.locator("[role=gridcell], td").all()] for row in rows]
    return {row[0]: row for row in cells if row}


def test_review_tab_confirm_reassign_download_and_a_second_session(browser, url, tmp_path):
    """Open a station database, confirm a page, reassign two cells (a click and a key), see the verified
    differential change, download the reviews CSV; a second browser session, at phone width, sees the same reviews."""
    import csv

    from playwright.sync_api import expect

    from tests.test_review_tab import make_slide

    slide = make_slide(import_app().MODELS["wbc"], tmp_path)
    context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors = open_review(page, url, slide.zip)
    progress = page.locator("#review-progress")
    expect(progress).to_contain_text(f"0 of {slide.cells} verified", timeout=TIMEOUT_MS)
    expect(page.get_by_text("The verified differential is the reviewer's")).to_be_visible()
    page.locator("#review-reviewer textarea").fill("A. Smith")
    # Confirm the first class page (the basophils: 2 cells).
    page.locator("#review-confirm").click()
    expect(progress).to_contain_text(f"2 of {slide.cells} verified", timeout=TIMEOUT_MS)
    assert differential_rows(page)["basophil"][3] == "2"
    # Reassign the first cell with a click on its label, the second with a key (9: smudge).
    thumbs = page.locator("#review-gallery button.thumbnail-item")
    thumbs.nth(0).click()
    first = page.locator("#review-cell-id input").input_value()
    page.locator("#review-label label", has_text="lymphocyte").click()
    expect(page.locator("#review-gallery")).to_contain_text("→ lymphocyte", timeout=TIMEOUT_MS)
    thumbs.nth(1).click()
    expect(page.locator("#review-cell-id input")).not_to_have_value(first, timeout=TIMEOUT_MS)
    page.locator("#review-info").click()  # focus outside any text field: the key is a shortcut
    page.keyboard.press("9")
    expect(page.locator("#review-gallery")).to_contain_text("→ smudge", timeout=TIMEOUT_MS)
    # The verified differential changed: no basophil left, one lymphocyte, one smudge not counted.
    expect(page.locator("#review-differential")).to_contain_text("not counted", timeout=TIMEOUT_MS)
    rows = differential_rows(page)
    assert rows["basophil"][3] == "0" and rows["lymphocyte"][3] == "1" and rows["smudge"][3] == "1"
    assert rows["basophil"][5] == "0/2 (0 %)"
    expect(progress).to_contain_text(f"2 of {slide.cells} verified")
    page.locator("#review-cam").click()
    expect(page.locator("#review-info")).to_contain_text("Grad-CAM", timeout=TIMEOUT_MS)
    if os.environ.get("HV_DOCS_SCREENSHOTS") == "1":
        expect(page.locator(".toast-body")).to_have_count(0, timeout=TIMEOUT_MS)  # the "confirmed" note has gone
        REVIEW_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=REVIEW_SCREENSHOT, full_page=True)
    # Download the reviews CSV.
    page.locator("#review-export").click()
    link = page.locator("#review-csv a").first
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        link.click()
    rows = {r["cell_id"]: r for r in csv.DictReader(open(download.value.path(), encoding="utf-8"))}
    assert len(rows) == slide.cells
    assert rows[first]["label"] == "lymphocyte" and rows[first]["model_label"] == "basophil"
    assert sorted(r["label"] for r in rows.values() if r["label"]) == ["lymphocyte", "smudge"]
    assert not errors, errors
    context.close()

    second_session_sees_the_same_reviews(browser, url, slide, tmp_path)


def second_session_sees_the_same_reviews(browser, url, slide, tmp_path):
    """Another technologist, on a phone, opens the same database: the same reviews, and nothing scrolls sideways."""
    from playwright.sync_api import expect

    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                has_touch=True)
    page = phone.new_page()
    errors = open_review(page, url, slide.zip)
    expect(page.locator("#review-progress")).to_contain_text(f"2 of {slide.cells} verified", timeout=TIMEOUT_MS)
    expect(page.locator("#review-gallery")).to_contain_text("→ lymphocyte")
    expect(page.locator("#review-gallery")).to_contain_text("→ smudge")
    assert differential_rows(page)["lymphocyte"][3] == "1"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390 + 1, "the Review tab scrolls sideways"
    page.screenshot(path=tmp_path / "review-phone.png", full_page=True)
    assert not errors, errors
    phone.close()
