"""report.html in a real headless browser (Debian's chromium): tables, figures, sorting, --open.

The page is rendered by chromium itself (``--dump-dom`` gives the DOM after the
inline script ran, ``--screenshot`` the pixels), so a broken document, a
figure that does not decode or a sort script with an error shows up here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tests.test_analysis_report import _analyse, _rows
from tests.sweep_cli import clean_env, run_module

pytestmark = pytest.mark.slow   # whole reports, several engines or a browser: seconds per test

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed: run `make test-packages` (Debian: apt-get install -y chromium)")
    return found


def _browse(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def _report(where: Path) -> Path:
    """report.html of a three-cell analysis written in ``where`` (trials.csv beside out/)."""
    rows = _rows()
    rows += [r | {"num_ctx": 1024, "cell_id": "chimera m num_ctx=1024",
                  "throughput_tok_s": None if r["throughput_tok_s"] is None else r["throughput_tok_s"] + 10}
             for r in _rows() if r["preset"] == "chimera"]
    path = where / "trials.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    result = _analyse(path, "--out", where / "out", cwd=where)
    assert result.returncode == 0, result.stderr
    return where / "out" / "report.html"


@pytest.fixture
def report(tmp_path: Path) -> Path:
    return _report(tmp_path)


@pytest.fixture(scope="module")
def shared_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One analysis with figures (seconds) for the tests that only read the page (a probe page goes beside it)."""
    return _report(tmp_path_factory.mktemp("report"))


def test_chromium_renders_every_table_and_figure(shared_report: Path, tmp_path: Path) -> None:
    report = shared_report
    dom = _browse(report, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    csvs = sorted(p.stem for p in report.parent.glob("*.csv"))
    tables = re.findall(r'<table class="sortable" id="t-([a-z_]+)"', html)
    assert sorted(tables) == csvs and "comprehensive" in tables and "baseline_vs_chimera" in tables
    pngs = sorted(p.stem for p in (report.parent / "figures").glob("*.png"))
    images = re.findall(r'<img alt="([a-z_]+)" src="data:image/png;base64,', html)
    assert sorted(images) == pngs and len(pngs) >= 3
    # the same numbers as the CSV: baseline's row of the comprehensive table
    assert re.search(r"<td>baseline</td><td class=\"num\" data-v=\"3\.0\">3</td>"
                     r"<td class=\"num\" data-v=\"12\.0\">12\.00</td>", html)
    assert "src=\"http" not in html and "<link" not in html   # nothing fetched from elsewhere

    shot = tmp_path / "shot.png"
    result = _browse(report, tmp_path, "--window-size=1280,2000", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = matplotlib.image.imread(str(shot))[..., :3]
    dark = (pixels.mean(axis=2) < 0.5).mean()
    assert 0.005 < dark < 0.5          # text, table borders and plot lines, on a white page
    figure_blue = np.all(np.abs(pixels - (0.12, 0.47, 0.71)) < 0.08, axis=2).sum()
    assert figure_blue > 20            # the throughput figure's markers (matplotlib's C0) were drawn


def test_clicking_a_header_sorts_the_table(shared_report: Path, tmp_path: Path) -> None:
    """The page's own script, driven by clicks inside chromium: numeric descending, then ascending."""
    report = shared_report
    probe = report.parent / "probe.html"
    probe.write_text(report.read_text().replace("</body>", """<script>
var th = Array.prototype.find.call(document.querySelectorAll('#t-comprehensive th'),
                                   function (h) { return h.textContent === 'tok/s mean'; });
function firstCells() { return Array.prototype.map.call(
  document.querySelectorAll('#t-comprehensive tbody tr'), function (r) { return r.cells[0].textContent; }).join('|'); }
th.click(); var up = firstCells(); th.click(); var down = firstCells();
var out = document.createElement('pre'); out.id = 'probe';
out.textContent = 'asc=' + up + ';desc=' + down + ';sort=' + th.getAttribute('aria-sort');
document.body.appendChild(out);
</script></body>"""))
    dom = _browse(probe, tmp_path, "--dump-dom")
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout)
    assert match, dom.stderr[-2000:]
    assert match.group(1) == ("asc=baseline|chimera num_ctx=512|chimera num_ctx=1024;"
                              "desc=chimera num_ctx=1024|chimera num_ctx=512|baseline;sort=descending")


def test_open_flag_hands_the_html_file_to_the_browser(report: Path, tmp_path: Path) -> None:
    """``--open`` goes through Python's webbrowser, which honours $BROWSER: a script records its argument."""
    seen = tmp_path / "opened.txt"
    fake = tmp_path / "fake-browser"
    fake.write_text(f"#!/bin/sh\necho \"$1\" > {seen}\n")
    fake.chmod(0o755)
    csv = tmp_path / "trials.csv"
    result = run_module("analysis", str(csv), "--out", str(tmp_path / "out"), "--no-figures", "--open",
                        cwd=tmp_path, timeout=120, env=clean_env(tmp_path, MPLBACKEND="Agg", BROWSER=str(fake)))
    assert result.returncode == 0, result.stderr
    assert seen.read_text().strip() == report.resolve().as_uri()
