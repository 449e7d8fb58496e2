"""The triage page: its HTTP API through gradio_client, and a real browser (Playwright driving Debian's
chromium, headless) that uploads an image, reads the score and moves the threshold slider."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from serving import free_port, serving

pytestmark = pytest.mark.peers

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("CHESTAID_SCREENSHOTS", Path(__file__).resolve().parents[1] / "tmp"))


def _open_page(playwright, url: str):
    """Debian's chromium, headless, with the flags this closed network needs; the page at `url`."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"])
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url)
    return browser, page


@pytest.fixture()
def server(request):
    run = request.getfixturevalue(request.param).root
    port = free_port()
    command = [sys.executable, "-m", "chestaid.apps.cli", "serve", str(run), "--port", str(port), "--max-upload-mb", "1"]
    with serving(command, port) as url:
        yield url


@pytest.mark.parametrize("server", ["ungated_run"], indirect=True)
def test_http_api_answers_gradio_client(server, ungated_run, nih_root, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    image = sorted((nih_root / "images_001" / "images").glob("*.png"))[0]
    result = client.predict(handle_file(str(image)), 64, "F", "PA", api_name="/score")
    assert set(result["findings"]) >= {"Effusion", "Hernia"} and len(result["findings"]) == 14
    first = result["findings"]["Effusion"]
    assert 0 <= first["risk_score"] <= 1 and first["decision"] in (0, 1)
    assert result["patient"] == {"age": 64, "sex": "F", "view": "PA"} and result["assumed"] == []
    assert result["sources"] == {"age": "given", "sex": "given", "view": "given"}
    assert result["run"] == "tiny" and result["backend"] == "torch"
    import urllib.request

    page = urllib.request.urlopen(server, timeout=10).read().decode()
    assert "run `tiny`" in page and str(ungated_run.root.parent) not in page  # the run's name, never a server path
    assert "Model card: tiny" in page and "**Synthetic phantoms**" in page  # the run's model card is on the page
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(Exception, match="(?i)415|only png|upload"):  # refused at upload, by its content
        client.predict(handle_file(str(bad)), None, "unknown", "unknown", api_name="/score")
    big = tmp_path / "big.png"  # over the server's --max-upload-mb 1: refused with a message, the server lives
    big.write_bytes(image.read_bytes() + b"\0" * 1_200_000)
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
        client.predict(handle_file(str(big)), None, "unknown", "unknown", api_name="/score")
    assert len(client.predict(handle_file(str(image)), None, "unknown", "unknown",
                              api_name="/score")["findings"]) == 14


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
@pytest.mark.parametrize("server", ["ungated_pneumonia_run"], indirect=True)
def test_browser_threshold_changes_decision_not_score(server, kaggle_root, tmp_path):
    from playwright.sync_api import sync_playwright

    image = next((kaggle_root / "test" / "PNEUMONIA").glob("*.jpeg"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser, page = _open_page(p, server)
        assert "does not diagnose" in page.inner_text("#disclaimer")
        page.set_input_files("#upload input[type=file]", str(bad))
        page.wait_for_timeout(1000)
        page.click("#analyse")
        page.wait_for_function("() => document.querySelector('#message textarea').value.includes('Could not read')")
        assert "not a recognised image" in page.input_value("#message textarea") or \
            "truncated" in page.input_value("#message textarea")
        page.goto(server)  # a fresh page for the good image
        page.set_input_files("#upload input[type=file]", str(image))
        page.wait_for_timeout(1000)
        page.click("#analyse")
        score_box = "#score textarea, #score input"
        page.wait_for_function(f"() => {{ const e = document.querySelector('{score_box.split(',')[0]}') || "
                               f"document.querySelector('#score input'); return e && e.value.length > 0; }}",
                               timeout=60_000)
        shown = page.input_value(score_box)  # "< 0.001" / "> 0.999" near the ends: never "0.000" or "1.000"
        score = {"< 0.001": 0.0, "> 0.999": 1.0}.get(shown) if shown[0] in "<>" else float(shown)
        decisions = []
        number = page.locator("#threshold input[type=number]")
        for value in (max(0.0, score - 0.05), min(1.0, score + 0.05) if score < 0.999 else 1.0):
            number.fill(f"{value:.3f}")
            number.press("Enter")
            page.wait_for_function(f"() => document.querySelector('#decision textarea').value.includes('{value:.3f}')")
            decisions.append(page.input_value("#decision textarea"))
            assert page.input_value(score_box) == shown  # the slider never changes the score
        assert decisions[0].startswith("Above threshold")
        if score < 0.95:
            assert decisions[1].startswith("Below threshold")
        page.screenshot(path=str(SCREENSHOTS / "serve.png"), full_page=True)
        browser.close()
    assert (SCREENSHOTS / "serve.png").stat().st_size > 20_000


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
@pytest.mark.parametrize("server", ["tiny_run"], indirect=True)
def test_browser_photograph_is_refused_until_scored_anyway(server, tmp_path):
    from playwright.sync_api import sync_playwright
    from PIL import Image
    from skimage import data

    photo = tmp_path / "photo.png"
    Image.fromarray(data.astronaut()).save(photo)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser, page = _open_page(p, server)
        page.set_input_files("#upload input[type=file]", str(photo))
        page.wait_for_timeout(1000)
        page.click("#analyse")
        page.wait_for_function("() => document.querySelector('#decision textarea').value.includes('Not scored')",
                               timeout=60_000)
        assert "unlike the training images" in page.input_value("#decision textarea")
        assert page.input_value("#score textarea, #score input") == ""
        page.click("#score-anyway")
        page.wait_for_function("() => document.querySelector('#decision textarea').value.includes('outside the input')",
                               timeout=60_000)
        assert float(page.input_value("#score textarea, #score input")) >= 0
        page.screenshot(path=str(SCREENSHOTS / "serve_refused.png"), full_page=True)
        browser.close()


@pytest.mark.parametrize("server", ["ungated_run"], indirect=True)
def test_identical_uploads_at_the_same_time_each_get_their_result(server, nih_root):
    """Gradio stores uploads by content: 8 clients sending one image at once share one file, which must stay
    until the last of them is scored (each gets the same result, none "upload it again")."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    image = str(sorted((nih_root / "images_001" / "images").glob("*.png"))[1])

    def client_run(k: int) -> list:
        client = Client(server, verbose=False)
        return [client.predict(handle_file(image), 50, "M", "PA", api_name="/score") for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(client_run, range(8)) for r in rs]
    assert len(results) == 24
    errors = [r for r in results if "findings" not in r]
    assert not errors, errors[:2]
    risks = {round(r["findings"]["Effusion"]["risk_score"], 6) for r in results}
    assert len(risks) == 1
