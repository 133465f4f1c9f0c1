"""The HTML report says what kind of evidence each verdict is: predictions (each with its control),
consistency checks and observations in separate tables, uninformative predictions flagged in amber,
no data with its reason, seeds and rules, the threshold table; the headline counts predictions. A real
headless Chromium renders every figure and the new sections with no console errors and saves a
screenshot."""

import io
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from implicitlab.experiments import Claim, Control, Threshold
from implicitlab.experiments.claims import headline
from implicitlab.plots import figure
from implicitlab.report import ReportEntry, summary_counts, thresholds_table, write_report

ARTIFACTS = Path(os.environ.get("IMPLICITLAB_ARTIFACTS", "test-artifacts"))
NAN = float("nan")


def _svg(label: str) -> str:
    fig, axes = figure(ncols=2)
    axes[0, 0].plot([1, 2, 3], [3, 1, 2], label=label)
    axes[0, 0].legend()
    axes[0, 1].loglog([1, 10, 100], [1, 0.1, 0.01])
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


CLAIMS = [
    Claim("margin grows", "the margin grows like log t", "Paper A, Thm 3", 0.93, "<=", 1.1, "ratio over a window",
          control=Control("square loss instead of exponential", 3.0, note="no margin to grow"),
          seeds=3, rule="holds on ≥ 2 of 3 seeds"),
    Claim("loss falls", "the training loss falls", "Paper A, Fig. 2", 0.01, "<=", 0.5, "final / initial loss",
          control=Control("random labels", 0.2)),
    Claim("deliberately failing", "a claim the numbers refute", "Paper A, Eq. 57", 0.0678, "<=", 0.01,
          "a test experiment's deliberately failing claim", control=Control("large init", 0.5)),
    Claim("rank identity", "rank H = n at zero loss", "Paper A, Thm 4", 0.0, "<=", 1e-9, "rank deficit",
          kind="identity"),
    Claim("curve is smooth", "the curve has no kink", "ours", 0.3, "<=", 1.0, "max second difference",
          kind="observation"),
    Claim("converged runs", "converged runs stay below 2/η", "Paper A, §5", NAN, "<=", 2.0, "max sharpness",
          control_reason="no setting of the paper makes GD converge above 2/η", no_data_reason="no run converged"),
]
THRESHOLDS = {"window": Threshold(1.1, "paper: Thm 3's constant"), "loss ratio": Threshold(0.5, "ours: half the "
              "initial loss, set before any run"), "rule": Threshold("2 of 3 seeds", "ours: a majority")}


def _entries() -> list[ReportEntry]:
    other = Claim("floor", "S ≥ S_min", "Paper B, result 1", 1.07, ">=", 0.999, "min over runs",
                  control_reason="S ≥ S_min is a property of every run")
    return [
        ReportEntry("test-mixed", "A test experiment with every kind of verdict", "Paper A", "tiny",
                    [c.to_dict() for c in CLAIMS], _svg("a"), {"steps": 10}, {"torch": "2.13.0"}, 1.25,
                    thresholds=thresholds_table(THRESHOLDS)),
        ReportEntry("test-ok", "A test experiment whose claims hold", "Paper B", "tiny", [other.to_dict()],
                    _svg("b"), {"steps": 5}, {"torch": "2.13.0"}, 0.5),
    ]


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.texts = tag, dict(attrs), parent, [], []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        out = list(self.texts)
        for child in self.children:
            out.append(child.text())
        return " ".join(" ".join(out).split())

    def find(self, tag=None, cls=()) -> list["Node"]:
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and set(cls) <= child.classes:
                found.append(child)
            found += child.find(tag, cls)
        return found


class Tree(HTMLParser):
    VOID = {"meta", "br", "link", "img", "hr", "input"}

    def __init__(self, text: str):
        super().__init__()
        self.root = self.cur = Node("root", {})
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not self.root and node.tag != tag:
            node = node.parent
        assert node is not self.root, f"unmatched </{tag}>"
        self.cur = node.parent

    def handle_data(self, data):
        self.cur.texts.append(data)


def _section(root: Node, experiment: str) -> list[Node]:
    """The nodes of the page between experiment's <h2> and the next <h2>."""
    body = root.find("body")[0].children
    start = next(i for i, n in enumerate(body) if n.tag == "h2" and n.attrs.get("id") == experiment)
    end = next((i for i in range(start + 1, len(body)) if body[i].tag == "h2"), len(body))
    return body[start:end]


def _rows(table: Node) -> dict[str, Node]:
    """Data rows of a claims table by claim name (the first text of the first cell)."""
    return {r.find("td")[0].texts[0].strip(): r for r in table.find("tr") if r.find("td")}


def test_page_shows_kinds_controls_flags_and_thresholds(tmp_path):
    page, claims_json = write_report(_entries(), tmp_path)
    text = page.read_text()
    root = Tree(text).root
    dicts = [c.to_dict() for c in CLAIMS]
    everything = [*dicts, *_entries()[1].claims]
    # the headline counts predictions: 2 of 5 hold (one uninformative, one refuted, one without data)
    (line,) = [p for p in root.find("p") if p.attrs.get("id") == "headline"]
    assert line.text() == headline(everything)
    assert line.text().startswith("2 of 5 predictions hold") and "1 uninformative" in line.text()
    cards = {c.find("span")[0].text(): c.find("b")[0].text() for c in root.find("div", ["card"]) if c.find("span")}
    assert cards == {"holds": "2", "refuted": "1", "uninformative": "1", "no data": "1"}

    nodes = _section(root, "test-mixed")
    headings = [n for n in nodes if n.tag == "h3"]
    assert [sorted(h.classes - {"section"}) for h in headings] == [
        ["prediction"], ["identity"], ["observation"], ["thresholds"]]
    assert headings[1].text().startswith("Consistency checks")
    tables = {next(iter(t.classes - {"claims"})): t for t in nodes if t.tag == "table"}
    predictions, identities, observations = (_rows(tables[k]) for k in ("prediction", "identity", "observation"))
    assert set(predictions) == {"margin grows", "loss falls", "deliberately failing", "converged runs"}
    assert set(identities) == {"rank identity"} and set(observations) == {"curve is smooth"}
    assert "control" in tables["prediction"].find("th")[6].text() and len(tables["identity"].find("th")) == 7

    def cell(row: Node, cls: str) -> Node:
        return row.find("td", [cls])[0]

    def verdict(row: Node) -> Node:
        return row.find("span", ["verdict"])[0]

    held = predictions["margin grows"]
    assert held.classes == {"holds"} and verdict(held).text() == "holds"
    ctl = cell(held, "control")
    assert "square loss instead of exponential" in ctl.text() and "measured 3 " in ctl.text() + " "
    assert ctl.find("span", ["ctl", "refuted"])[0].text() == "refuted there" and "no margin to grow" in ctl.text()
    assert "3" in held.find("td")[5].text() and "holds on ≥ 2 of 3 seeds" in held.find("td")[5].text()

    flagged = predictions["loss falls"]  # its control holds too: amber, its own class, said so
    assert flagged.classes == {"uninformative"} and verdict(flagged).classes == {"verdict", "uninformative"}
    assert verdict(flagged).text() == "uninformative" and "could not have failed" in flagged.text()
    assert cell(flagged, "control").find("span", ["ctl", "holds"])[0].text() == "holds there too"

    bad = predictions["deliberately failing"]
    assert bad.classes == {"refuted"} and verdict(bad).text() == "refuted"
    assert "0.0678" in bad.text() and "<= 0.01" in bad.text()

    none = predictions["converged runs"]
    assert none.classes == {"nodata"} and verdict(none).text() == "no data" and "no run converged" in none.text()
    assert "no control: no setting of the paper makes GD converge above 2/η" in cell(none, "control").text()
    assert identities["rank identity"].classes == {"holds"} and not identities["rank identity"].find("td", ["control"])

    rows = [[td.text() for td in tr.find("td")] for tr in tables["thresholds"].find("tr") if tr.find("td")]
    assert rows == [["window", "1.1", "paper: Thm 3's constant"],
                    ["loss ratio", "0.5", "ours: half the initial loss, set before any run"],
                    ["rule", "2 of 3 seeds", "ours: a majority"]]
    assert "No threshold table declared" in " ".join(n.text() for n in _section(root, "test-ok"))

    # the summary names what is not evidence: refuted, uninformative, without data — not what holds
    (summary,) = root.find("table", ["flagged"])
    listed = [[td.text() for td in r.find("td")[:3]] for r in summary.find("tr") if r.find("td")]
    assert listed == [["test-mixed", "prediction", "loss falls"], ["test-mixed", "prediction", "deliberately failing"],
                      ["test-mixed", "prediction", "converged runs"]]
    assert text.count("<svg") == 2
    # self-contained: nothing is fetched (namespace URIs inside the SVGs are identifiers, not loads)
    assert "<link" not in text and "<script" not in text and "src=" not in text and "@import" not in text
    counts = summary_counts(_entries())
    assert counts["Paper A"]["prediction"] == {"holds": 1, "refuted": 1, "uninformative": 1, "no data": 1}
    assert counts["Paper A"]["identity"]["holds"] == 1 and counts["Paper B"]["prediction"]["holds"] == 1

    records = json.loads(claims_json.read_text())
    assert records[0]["thresholds"]["window"] == {"value": 1.1, "source": "paper: Thm 3's constant"}
    assert records[0]["claims"] == json.loads(json.dumps(dicts))  # the claim dicts, NaN as null
    assert records[0]["counts"]["prediction"]["uninformative"] == 1
    by_name = {c["name"]: c for c in records[0]["claims"]}
    assert by_name["loss falls"]["control"] == {"setting": "random labels", "measured": 0.2, "verdict": "holds",
                                                "note": ""}
    assert by_name["converged runs"]["control_reason"].startswith("no setting") and records[1]["thresholds"] == {}


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

        def colour(selector: str, prop: str = "color") -> str:
            return driver.execute_script(
                f"return getComputedStyle(document.querySelector(arguments[0])).{prop};", selector).replace(" ", "")

        assert colour("table.claims tr.refuted td.claim") in ("rgb(165,14,14)", "rgba(165,14,14,1)")
        assert colour("table.claims tr.uninformative td.claim") in ("rgb(138,75,0)", "rgba(138,75,0,1)")  # amber
        assert colour("table.claims tr.uninformative td", "backgroundColor") in ("rgb(255,232,194)",
                                                                                 "rgba(255,232,194,1)")
        shown = driver.execute_script(
            "return Array.from(document.querySelectorAll('h3.section')).filter(h => h.getBoundingClientRect().height"
            " > 0).map(h => h.textContent.split(' — ')[0]);")
        assert shown == ["Predictions", "Consistency checks", "Observations", "Thresholds", "Predictions",
                         "Thresholds"]
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        # the whole page in the screenshot: summary, figures, the new sections
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1280, min(int(height) + 120, 8000))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        driver.quit()
