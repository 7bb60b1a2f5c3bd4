"""The live progress page in a real browser: Debian's headless Chromium driven by Playwright
(its own browser download is never used). While the writer records pairs, the grid's cells
change colour without a reload; the page fits a phone's width. Skipped only where Chromium
is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from beaconsql import seed, writer
from beaconsql.serve import app as serve_app

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
COLOURS = {
    "pending": "rgb(201, 206, 214)",
    "running": "rgb(240, 180, 41)",
    "completed": "rgb(47, 158, 91)",
    "failed": "rgb(214, 69, 69)",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def cell(page: Any, region: str, model: str, question: str) -> Any:
    return page.locator(
        f'.cell[data-region="{region}"][data-model="{model}"][data-question="{question}"]'
    )


def test_cells_change_colour_while_the_writer_records(db: psycopg.Connection[Any], dsn, browser):
    expect = sync_api.expect
    spec = seed.jobspec(f"bias-detection-live-{uuid.uuid4().hex[:8]}")
    writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US", "EU"])
    us = writer.start_region(db, run, "US", provider_id=seed.PROVIDERS["US"])
    model, question = seed.MODELS[1], seed.QUESTIONS[2]
    with serve_app.serving(serve_app.Settings(dsn=dsn, share_seconds=1.0)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{url}/jobs/{spec['id']}")
        target = cell(page, "US", model, question)
        # US started: its pairs are placeholders carrying the region's status; EU not started
        expect(target).to_have_class(re.compile(r"\bstatus-running\b"), timeout=10_000)
        expect(target).to_have_css("background-color", COLOURS["running"])
        expect(page.locator('.cell[data-region="EU"].status-none')).to_have_count(9)
        expect(page.locator("#summary")).to_contain_text("0 of 18 done")
        page.evaluate("window.__notReloaded = true")

        writer.record_pair(
            db,
            us,
            model_id=model,
            question_id=question,
            status="completed",
            output=seed.answer(model, question, "US"),
        )
        expect(target).to_have_class(re.compile(r"\bstatus-completed\b"), timeout=10_000)
        expect(target).to_have_css("background-color", COLOURS["completed"])
        expect(page.locator("#summary")).to_contain_text("1 of 18 done")

        other = cell(page, "US", seed.MODELS[0], seed.QUESTIONS[0])
        writer.record_pair(
            db, us, model_id=seed.MODELS[0], question_id=seed.QUESTIONS[0], status="failed"
        )
        expect(other).to_have_class(re.compile(r"\bstatus-failed\b"), timeout=10_000)
        expect(other).to_have_css("background-color", COLOURS["failed"])

        writer.start_region(db, run, "EU", provider_id=seed.PROVIDERS["EU"])
        expect(page.locator('.cell[data-region="EU"].status-running')).to_have_count(
            9, timeout=10_000
        )
        writer.finish_region(db, us)  # its 7 pairs without a result become failed
        expect(page.locator('.cell[data-region="US"].status-failed')).to_have_count(
            8, timeout=10_000
        )
        by_region = page.locator('#by-region tr[data-name="US"]')
        expect(by_region).to_contain_text("9 / 9")
        expect(by_region).to_contain_text("100%")
        assert page.evaluate("window.__notReloaded") is True
        page.close()


def test_page_fits_a_phone(db: psycopg.Connection[Any], dsn, browser, tmp_path):
    seed.record_with_writer(db, seed.jobspec())
    with serve_app.serving(serve_app.Settings(dsn=dsn)) as url:
        page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        page.goto(f"{url}/jobs/{seed.SEED_JOBSPEC_ID}")
        sync_api.expect(page.locator(".cell.status-completed")).to_have_count(18, timeout=10_000)
        sync_api.expect(page.locator("#summary")).to_contain_text("18 of 18 done (100%)")
        # nothing wider than the screen: the page does not scroll sideways
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        box = cell(page, "EU", seed.MODELS[2], seed.QUESTIONS[2]).bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390 and box["width"] >= 30
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        page.close()


def test_page_follows_the_event_stream_when_asked(db: psycopg.Connection[Any], dsn, browser):
    spec = seed.jobspec(f"bias-detection-sse-{uuid.uuid4().hex[:8]}", regions=["US"])
    writer.create_job(db, spec)
    run = writer.start_run(db, spec["id"], regions=["US"])
    us = writer.start_region(db, run, "US")
    with serve_app.serving(serve_app.Settings(dsn=dsn, stream_seconds=0.5)) as url:
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{url}/jobs/{spec['id']}?live=sse")
        sync_api.expect(page.locator(".cell.status-running")).to_have_count(9, timeout=10_000)
        writer.finish_region(db, us)
        sync_api.expect(page.locator(".cell.status-failed")).to_have_count(9, timeout=10_000)
        assert any(r.endswith("/events") for r in requests)
        assert not any(r.endswith("/progress") for r in requests)
        page.close()
