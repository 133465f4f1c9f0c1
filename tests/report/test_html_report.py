"""The HTML report: a failing claim shows in red with its numbers; a real headless Chromium renders
every figure with no console errors and saves a screenshot."""

import io
import os
import shutil
from pathlib import Path

import pytest

from implicitlab.experiments import Claim
from implicitlab.plots import figure
from implicitlab.report import ReportEntry, summary_counts, write_report

ARTIFACTS = Path(os.environ.get("IMPLICITLAB_ARTIFACTS", "test-artifacts"))


def _svg(label: str) -> str:
    fig, axes = figure(ncols=2)
    axes[0, 0].plot([1, 2, 3], [3, 1, 2], label=label)
    axes[0, 0].legend()
    axes[0, 1].loglog([1, 10, 100], [1, 0.1, 0.01])
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


def _entries() -> list[ReportEntry]:
    good = Claim("gap bounded", "the gap is O(1/log t)", "Paper A, Thm 3", 0.93, "<=", 1.1, "ratio over a window")
    bad = Claim("deliberately failing", "a claim the numbers refute", "Paper A, Eq. 57", 0.0678, "<=", 0.01,
                "a test experiment's deliberately failing claim")
    other = Claim("floor", "S ≥ S_min", "Paper B, result 1", 1.07, ">=", 0.999, "min over runs")
    return [
        ReportEntry("test-fail", "A test experiment with a failing claim", "Paper A", "tiny",
                    [good.to_dict(), bad.to_dict()], _svg("a"), {"steps": 10}, {"torch": "2.13.0"}, 1.25),
        ReportEntry("test-ok", "A test experiment whose claims hold", "Paper B", "tiny", [other.to_dict()],
                    _svg("b"), {"steps": 5}, {"torch": "2.13.0"}, 0.5),
    ]


def test_failing_claim_is_red_with_its_numbers(tmp_path):
    page, claims = write_report(_entries(), tmp_path)
    text = page.read_text()
    assert "<tr class='refuted'><td class='claim'>deliberately failing" in text
    assert "0.0678" in text and "&lt;= 0.01" in text
    assert "<span class='verdict refuted'>refuted</span>" in text
    assert text.count("<svg") == 2
    # self-contained: nothing is fetched (namespace URIs inside the SVGs are identifiers, not loads)
    assert "<link" not in text and "<script" not in text and "src=" not in text and "@import" not in text
    assert summary_counts(_entries()) == {"Paper A": {"holds": 1, "refuted": 1, "no data": 0},
                                          "Paper B": {"holds": 1, "refuted": 0, "no data": 0}}
    assert '"verdict": "refuted"' in claims.read_text()


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_report_renders_in_headless_chromium(tmp_path):
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing: `make test` installs them (Debian packages)")
        pytest.skip("chromium/chromedriver not installed (make test installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    page, _ = write_report(_entries(), tmp_path)
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        driver.get(page.resolve().as_uri())
        sizes = driver.execute_script(
            "return Array.from(document.querySelectorAll('.figure svg')).map(s => {"
            " const r = s.getBoundingClientRect(); return [r.width, r.height, s.querySelectorAll('path').length]; });"
        )
        assert len(sizes) == 2
        for width, height, paths in sizes:
            assert width > 100 and height > 50 and paths > 0  # drawn, with content
        red = driver.execute_script(
            "const c = document.querySelector('tr.refuted td.claim'); return getComputedStyle(c).color;")
        assert red.replace(" ", "") in ("rgb(165,14,14)", "rgba(165,14,14,1)")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        driver.quit()
