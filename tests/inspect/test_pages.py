"""The pages: the notes' convolution demo and a run's report, as files and in a real browser.

The browser is Debian's headless Chromium driven by Selenium (``scripts/setup --dev`` installs
both); one browser serves the module. The pages must load from ``file://`` with no console
error, the demo must show jaxconv's convolution (checked against a NumPy loop) as it steps, and
a screenshot must not be blank.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import jaxconv.cli as cli
from jaxconv.inspect import conv_demo, convolve, write_conv_demo
from jaxconv.models import registry

sys.path.insert(0, str(Path(__file__).parent.parent / "runs"))
from synthetic import tiny_net, write_idx_dataset

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = "no Chromium: `scripts/setup --dev` installs Debian's chromium and chromium-driver (apt-get)"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]
# the notes' printed output: two columns of each slice (the extraction lost the third, see
# /work/shared/reference/README.md)
NOTES_PRINTED = {0: [[1, 1], [6, 2], [2, 4]], 1: [[-2, -3], [7, -7], [0, 2]]}


def loop_convolution(x, w, b, stride, pad, dilation):
    """The notes' arithmetic with NumPy loops: (H_out, W_out, K)."""
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    f, k = w.shape[0], w.shape[-1]
    span = dilation * (f - 1) + 1
    out_h, out_w = (xp.shape[0] - span) // stride + 1, (xp.shape[1] - span) // stride + 1
    out = np.zeros((out_h, out_w, k))
    for i in range(out_h):
        for j in range(out_w):
            window = xp[i * stride : i * stride + span : dilation, j * stride : j * stride + span : dilation]
            out[i, j] = np.einsum("abc,abck->k", window, w) + b
    return out


def test_the_notes_example_prints_the_notes_output():
    demo = conv_demo(example="notes")
    assert demo.padded.shape == (7, 7, 3) and demo.output.shape == (3, 3, 2)
    for k, printed in NOTES_PRINTED.items():
        np.testing.assert_array_equal(demo.output[:, :2, k], printed)
    np.testing.assert_array_equal(demo.output, loop_convolution(demo.input, demo.filters, demo.bias, 2, 1, 1))


@pytest.mark.parametrize(
    "sizes", [{}, {"input_size": (7, 6, 2), "filters": 3, "size": 2, "stride": 1, "pad": 0, "dilation": 2}]
)
def test_any_sizes_give_jaxconvs_convolution(sizes):
    demo = conv_demo(**sizes, seed=3)
    args = {k: v for k, v in sizes.items() if k in ("stride", "pad", "dilation")}
    expected = loop_convolution(
        demo.input, demo.filters, demo.bias, **({"stride": 2, "pad": 1, "dilation": 1} | args)
    )
    np.testing.assert_allclose(demo.output, expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"filters .* with the input's C"):
        convolve(demo.input, demo.filters[:, :, :1], demo.bias)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 1-epoch run of a tiny model on synthetic data; `jaxconv train` writes its report."""
    data_dir = write_idx_dataset(tmp_path_factory.mktemp("data"))
    run_dir = tmp_path_factory.mktemp("run") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._MODELS, "tiny", registry.ModelSpec("tiny", tiny_net, (28, 28, 1), 10, {}))
        argv = ["train", "--model", "tiny", "--epochs", "1", "--batch-size", "16", "--no-progress"]
        assert cli.main([*argv, "--data-dir", str(data_dir), "--run-dir", str(run_dir)]) == 0
        assert (run_dir / "report.html").exists()
        (run_dir / "report.html").unlink()
        assert cli.main(["report", str(run_dir), "--data-dir", str(data_dir), "--images", "4"]) == 0
    return run_dir


def test_the_report_is_one_self_contained_file(run_dir):
    page = (run_dir / "report.html").read_text()
    for heading in ("Training curves", "Confusion matrix", "Most confident mistakes", "First-layer filters",
                    "Inside the net", "receptive fields"):  # fmt: skip
        assert heading in page
    assert "field" in page and "conv_0" in page  # the summary table
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) >= 6 and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "http://" not in page and "https://" not in page


def test_the_demo_command_writes_the_page(tmp_path, capsys):
    assert cli.main(["demo", "conv", "--example", "notes", "--output", str(tmp_path / "demo.html")]) == 0
    assert "demo.html" in capsys.readouterr().out
    assert cli.main(["demo", "conv", "--input", "5x5", "--output", str(tmp_path / "x.html")]) == 2
    assert "give HxWxC" in capsys.readouterr().err


# --- in the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(NO_BROWSER)
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed: pip install -e .[dev]"
    )
    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="jaxconv-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(browser, path: Path) -> None:
    browser.get(path.resolve().as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors


def assert_not_blank(browser) -> None:
    pixels = imread(io.BytesIO(browser.get_screenshot_as_png()))[..., :3]
    assert pixels.std() > 0.05 and (pixels.reshape(-1, 3) != pixels[0, 0]).any(axis=1).mean() > 0.05


@pytest.mark.parametrize("example", ["notes", "dilated"])
def test_the_demo_steps_through_jaxconvs_output(browser, tmp_path, example):
    from selenium.webdriver.common.by import By

    demo = conv_demo(example="notes") if example == "notes" else conv_demo((5, 5, 2), 1, 2, 1, 0, 2, seed=5)
    open_page(browser, write_conv_demo(tmp_path / "demo.html", demo))
    browser.find_element(By.ID, "toggle").click()  # stop the movement, then step by hand
    out_h, out_w, count = demo.output.shape
    start = tuple(
        int(v) for v in browser.find_element(By.ID, "current-value").get_attribute("data-position").split(",")
    )
    seen = {}
    for _ in range(out_h * out_w * count):
        value = browser.find_element(By.ID, "current-value")
        k, i, j = (int(v) for v in value.get_attribute("data-position").split(","))
        seen[k, i, j] = (float(value.get_attribute("data-value")), float(value.text))
        assert len(browser.find_elements(By.CSS_SELECTOR, "td.window")) == demo.filters[..., 0].size
        browser.find_element(By.ID, "next").click()
    assert len(seen) == demo.output.size
    for (k, i, j), (value, shown) in seen.items():
        assert value == demo.output[i, j, k] and shown == pytest.approx(demo.output[i, j, k], abs=1e-3)
        cell = browser.find_element(By.ID, f"o-{k}-{i}-{j}")
        assert float(cell.get_attribute("data-value")) == demo.output[i, j, k]
    assert start == (0, 0, 0)
    if example == "notes":
        np.testing.assert_array_equal(
            [[seen[0, i, j][0] for j in range(2)] for i in range(3)], NOTES_PRINTED[0]
        )
    assert_not_blank(browser)


def test_the_report_opens_without_errors(browser, run_dir):
    from selenium.webdriver.common.by import By

    open_page(browser, run_dir / "report.html")
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 6
    assert all(browser.execute_script("return arguments[0].naturalWidth", image) > 0 for image in images)
    assert_not_blank(browser)
