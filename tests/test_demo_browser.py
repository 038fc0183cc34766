"""demo.py's web app in a real browser: headless Debian Chromium driven by playwright.

Starts ``demo.py`` with the tiny model (with a random tiny text encoder, generic queries and a two-object
vocabulary, so masks are labelled) on a free localhost port, uploads an image, clicks a point and checks
that labelled mask images appear in both galleries; then draws a box with two clicks. On the "Segment
everything" tab it checks that the panoptic result renders with a legend of vocabulary names, and that
*Find* shows only the masks of a name. Skipped when /usr/bin/chromium or the playwright package is missing
(``.ci/run`` installs chromium).
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
OBJECTS = ("cat", "dog")
# a random tiny text encoder next to the checkpoint's weights (as tests/test_demo.py's TEXT_OPTS)
TEXT_OPTS = ["MODEL.TEXT.ARCH=unicl", "MODEL.TEXT.CONTEXT_LENGTH=18", "MODEL.TEXT.WIDTH=64", "MODEL.TEXT.HEADS=4",
             "MODEL.TEXT.LAYERS=2", "MODEL.TEXT.CACHE_DIR="]
# generic queries (as configs/semantic_sam_tiny_generic.yaml; their selection layers stay random, the
# checkpoint has none) with the panoptic thresholds at 0, so that the random class scores keep segments
GENERIC_OPTS = ["MODEL.DECODER.NUM_OBJECT_QUERIES=20", "MODEL.DECODER.TWO_STAGE=True",
                "MODEL.DECODER.INITIAL_PRED=True", "MODEL.DECODER.DN=seg", "MODEL.DECODER.DN_NUM=10",
                "MODEL.DECODER.TEST.OBJECT_MASK_THRESHOLD=0.0", "MODEL.DECODER.TEST.OVERLAP_THRESHOLD=0.0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log_path: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            with open(log_path) as f:
                raise RuntimeError(f"demo.py exited with status {proc.returncode}:\n{f.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"demo.py did not serve {url} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    log_path = str(tmp_path_factory.mktemp("server") / "demo.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "demo.py"), "--config", os.path.join(TINY, "tiny_parity.yaml"),
         "--ckpt", os.path.join(TINY, "tiny_parity.pth"), "--device", "cpu", "--short-side", "160",
         "--port", str(port), "--objects", ",".join(OBJECTS), "--parts", "head,leg", *TEXT_OPTS, *GENERIC_OPTS],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc, log_path, timeout=180)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    img = np.full((150, 200, 3), 40, np.uint8)
    img[30:100, 40:140] = (220, 80, 50)
    path = tmp_path_factory.mktemp("browser") / "upload.png"
    Image.fromarray(img).save(path)
    return str(path)


def test_upload_click_and_box(server, image_file, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server, wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_selector("#input-image input[type=file]", state="attached", timeout=120_000)
            page.locator("#input-image input[type=file]").set_input_files(image_file)
            page.wait_for_selector("#input-image img", timeout=60_000)
            page.wait_for_function(
                "document.querySelector('#status').innerText.includes('encoded')", timeout=120_000
            )

            # a click on the image: masks appear in both galleries, the status names the click
            img = page.locator("#input-image img").first
            box = img.bounding_box()
            img.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.4})
            page.wait_for_selector("#gallery-score img", timeout=120_000)
            page.wait_for_selector("#gallery-area img", timeout=60_000)
            page.wait_for_function("document.querySelector('#status').innerText.includes('mask(s) for the click')")
            assert page.locator("#gallery-score img").count() >= 1
            status = page.locator("#status").inner_text()
            x, y = (float(v) for v in status.split("click (")[1].split(")")[0].split(","))
            assert abs(x - 90) <= 3 and abs(y - 60) <= 3  # image pixels, not screen pixels
            captions = page.locator("#gallery-score").inner_text()
            assert "level " in captions and any(f"{name} | level" in captions or f"{name}: " in captions
                                                for name in OBJECTS), captions

            # box mode: two corners
            page.get_by_label("box (click two corners)").check()
            img.click(position={"x": box["width"] * 0.2, "y": box["height"] * 0.2})
            page.wait_for_function("document.querySelector('#status').innerText.includes('first corner')")
            img.click(position={"x": box["width"] * 0.7, "y": box["height"] * 0.7})
            page.wait_for_function("document.querySelector('#status').innerText.includes('for the box')", timeout=120_000)
            assert page.locator("#gallery-score img").count() >= 1

            # automatic tab: upload, choose a level, generate
            page.get_by_role("tab", name="Automatic").click()
            page.locator("#auto-image input[type=file]").set_input_files(image_file)
            page.wait_for_selector("#auto-image img", timeout=60_000)
            page.locator("#auto-pps input[type=number]").fill("4")
            page.locator("#auto-pps input[type=number]").press("Enter")
            page.locator("#auto-levels").get_by_label("Level 3").check()
            page.locator("#auto-run").click()
            page.wait_for_selector("#auto-output img", timeout=120_000)
            page.wait_for_function("document.querySelector('#auto-status').innerText.includes('level 3 (4^2 points)')", timeout=120_000)
        except Exception:
            if page is not None:
                page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()


def test_segment_everything_tab(server, image_file, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server, wait_until="domcontentloaded", timeout=120_000)
            page.get_by_role("tab", name="Segment everything").click()
            page.locator("#segment-image input[type=file]").set_input_files(image_file)
            page.wait_for_selector("#segment-image img", timeout=60_000)
            page.locator("#segment-run").click()

            # the panoptic result: the image, one mask layer and one legend entry per label present
            page.wait_for_selector("#segment-output .legend-item", timeout=120_000)
            page.wait_for_function("document.querySelector('#segment-status').innerText.includes('segment(s) of')")
            legend = [t.strip() for t in page.locator("#segment-output .legend-item").all_inner_texts()]
            assert legend and set(legend) <= set(OBJECTS) and len(legend) == len(set(legend)), legend
            assert page.locator("#segment-output img").count() == 1 + len(legend)
            status = page.locator("#segment-status").inner_text()
            assert f"of {len(legend)} label(s): {', '.join(legend)}" in status, status

            # Find: only the masks of that name
            page.locator("#find-names textarea").fill(legend[0])
            page.locator("#find-run").click()
            page.wait_for_function(
                f"document.querySelector('#segment-status').innerText.includes('labelled {legend[0]}')",
                timeout=120_000,
            )
            items = [t.strip() for t in page.locator("#segment-output .legend-item").all_inner_texts()]
            assert items == [legend[0]], items
        except Exception:
            if page is not None:
                page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()
