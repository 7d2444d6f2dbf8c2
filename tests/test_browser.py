"""The page in a real browser (Playwright + Debian's Chromium): upload, label, heatmap, 3D.

Screenshots land in the test's tmp dir (desktop and phone widths); CI installs
/usr/bin/chromium (.ci/run), elsewhere the test skips when it is missing.
"""

import io
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
    pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (requirements.txt)")
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


def test_upload_shows_label_heatmap_and_3d(browser, url, tmp_path):
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
    page.wait_for_timeout(2000)  # let Babylon draw a few frames
    shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), np.float32)
    assert shot.std() > 5, "the 3D canvas is blank"
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
    page.wait_for_timeout(3000)  # a second toast, if any, would arrive within this
    toasts = page.locator(".toast-body").all_inner_texts()
    page.close()
    assert len(toasts) == 1, toasts
    assert "broken.jpg" in toasts[0] and "truncated" in toasts[0]
    assert not errors, errors
