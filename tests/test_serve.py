"""The triage page: its HTTP API through gradio_client, and a real browser (Playwright driving Debian's
chromium, headless) that uploads an image, reads the score and moves the threshold slider."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from serving import free_port, serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("CHESTAID_SCREENSHOTS", Path(__file__).resolve().parents[1] / "tmp"))


@pytest.fixture()
def server(request):
    run = request.getfixturevalue(request.param).root
    port = free_port()
    with serving([sys.executable, "-m", "chestaid.cli", "serve", str(run), "--port", str(port)], port) as url:
        yield url


@pytest.mark.parametrize("server", ["tiny_run"], indirect=True)
def test_http_api_answers_gradio_client(server, nih_root, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    image = sorted((nih_root / "images_001" / "images").glob("*.png"))[0]
    result = client.predict(handle_file(str(image)), 64, "F", "PA", api_name="/score")
    assert set(result["findings"]) >= {"Effusion", "Hernia"} and len(result["findings"]) == 14
    first = result["findings"]["Effusion"]
    assert 0 <= first["risk_score"] <= 1 and first["decision"] in (0, 1)
    assert result["patient"] == {"age": 64, "sex": "F", "view": "PA"} and result["assumed"] == []
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert "not a recognised image" in client.predict(handle_file(str(bad)), None, "unknown", "unknown",
                                                      api_name="/score")["error"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
@pytest.mark.parametrize("server", ["pneumonia_run"], indirect=True)
def test_browser_threshold_changes_decision_not_score(server, kaggle_root, tmp_path):
    from playwright.sync_api import sync_playwright

    image = next((kaggle_root / "test" / "PNEUMONIA").glob("*.jpeg"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(server)
        assert "does not diagnose" in page.inner_text("#disclaimer")
        page.set_input_files("#upload input[type=file]", str(bad))
        page.wait_for_timeout(1000)
        page.click("#analyse")
        page.wait_for_function("() => document.querySelector('#message').innerText.includes('Could not read')")
        assert "not a recognised image" in page.inner_text("#message") or "truncated" in page.inner_text("#message")
        page.goto(server)  # a fresh page for the good image
        page.set_input_files("#upload input[type=file]", str(image))
        page.wait_for_timeout(1000)
        page.click("#analyse")
        score_box = "#score textarea, #score input"
        page.wait_for_function(f"() => {{ const e = document.querySelector('{score_box.split(',')[0]}') || "
                               f"document.querySelector('#score input'); return e && e.value.length > 0; }}",
                               timeout=60_000)
        score = float(page.input_value(score_box))
        decisions = []
        number = page.locator("#threshold input[type=number]")
        for value in (max(0.0, score - 0.05), min(1.0, score + 0.05) if score < 0.999 else 1.0):
            number.fill(f"{value:.3f}")
            number.press("Enter")
            page.wait_for_function(f"() => document.querySelector('#decision').innerText.includes('{value:.3f}')")
            decisions.append(page.inner_text("#decision"))
            assert float(page.input_value(score_box)) == score  # the slider never changes the score
        assert decisions[0].startswith("Above threshold")
        if score < 0.95:
            assert decisions[1].startswith("Below threshold")
        page.screenshot(path=str(SCREENSHOTS / "serve.png"), full_page=True)
        browser.close()
    assert (SCREENSHOTS / "serve.png").stat().st_size > 20_000
