"""The notes' convolution demo, computed by jaxconv, as one self-contained HTML page.

    demo = conv_demo()                      # the notes' sizes: 5x5x3 input, pad 1, two 3x3x3 filters, stride 2
    demo = conv_demo(example="notes")       # the notes' printed numbers
    write_conv_demo("conv-demo.html", demo)

The page lays out the input volume (zero padding included, blue), each filter (red) and its
bias (green) and the output volume (green) as depth slices in rows, and steps over the
output positions: the highlighted input window times the filter, summed, plus the bias. Every
output number on the page is ``jc.Conv``'s (through ``jax.lax.conv_general_dilated``); the
page's script only shows the products of each step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxconv.errors import ShapeError
from jaxconv.inspect.page import html_page
from jaxconv.layers import Conv

# the notes' demo: x[:, :, d] without its padding, w0 and w1 as (F, F, C), biases 1 and 0
NOTES_INPUT = np.stack(
    [
        [[2, 0, 2, 1, 0], [2, 1, 0, 2, 0], [2, 1, 1, 0, 0], [0, 0, 2, 2, 0], [0, 1, 0, 2, 0]],
        [[1, 1, 0, 2, 0], [1, 2, 0, 1, 0], [2, 2, 2, 1, 1], [2, 1, 2, 2, 0], [0, 0, 1, 2, 0]],
        [[0, 1, 0, 1, 2], [0, 2, 1, 0, 2], [1, 2, 2, 0, 0], [1, 0, 0, 2, 1], [1, 0, 2, 0, 0]],
    ],
    axis=-1,
).astype(np.float32)
NOTES_FILTERS = np.stack(
    [
        np.stack([[[-1, 0, 1], [-1, 0, -1], [-1, -1, 1]], [[0, 1, 0], [0, 0, 0], [-1, 1, 1]],
                  [[0, 0, 1], [0, 0, 0], [1, -1, -1]]], axis=-1),
        np.stack([[[1, 1, 1], [1, 1, 0], [1, 0, -1]], [[-1, 0, 0], [0, 0, -1], [-1, 1, -1]],
                  [[-1, 0, 0], [-1, 0, 1], [0, 1, -1]]], axis=-1),
    ],
    axis=-1,
).astype(np.float32)  # (3, 3, 3, 2)  # fmt: skip
NOTES_BIAS = np.array([1, 0], np.float32)


@dataclass(frozen=True)
class ConvDemo:
    """One convolution, every number of it: the input (H, W, C), the filters (F, F, C, K), the
    bias (K,), the stride, padding and dilation, and jaxconv's output (H_out, W_out, K)."""

    input: np.ndarray
    filters: np.ndarray
    bias: np.ndarray
    stride: int
    pad: int
    dilation: int
    output: np.ndarray

    @property
    def padded(self) -> np.ndarray:
        """(H + 2P, W + 2P, C): the input with its zero border, as the page shows it."""
        return np.pad(self.input, ((self.pad, self.pad), (self.pad, self.pad), (0, 0)))


def conv_demo(
    input_size: tuple[int, int, int] = (5, 5, 3),
    filters: int = 2,
    size: int = 3,
    stride: int = 2,
    pad: int = 1,
    dilation: int = 1,
    *,
    example: str | None = None,
    seed: int = 0,
) -> ConvDemo:
    """A demo with the given sizes (the notes' by default) and small random integers, as the notes
    use (inputs 0..2, weights -1..1, biases 0..1), drawn with ``seed``; ``example="notes"``
    takes the notes' printed input, filters and biases (and their sizes) instead."""
    if example not in (None, "notes"):
        raise ValueError(f"conv_demo: unknown example {example!r}; the one example is 'notes'")
    if example == "notes":
        return convolve(NOTES_INPUT, NOTES_FILTERS, NOTES_BIAS, stride=2, pad=1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, input_size).astype(np.float32)
    w = rng.integers(-1, 2, (size, size, input_size[-1], filters)).astype(np.float32)
    return convolve(
        x, w, rng.integers(0, 2, filters).astype(np.float32), stride=stride, pad=pad, dilation=dilation
    )


def convolve(
    x: np.ndarray, filters: np.ndarray, bias: np.ndarray, *, stride: int = 1, pad: int = 0, dilation: int = 1
) -> ConvDemo:
    """The demo of x (H, W, C) convolved with filters (F, F, C, K) plus bias (K,) by ``jc.Conv``."""
    x, filters, bias = (np.asarray(a, np.float32) for a in (x, filters, bias))
    if x.ndim != 3 or filters.ndim != 4 or filters.shape[2] != x.shape[2] or bias.shape != filters.shape[3:]:
        raise ShapeError(
            f"conv demo: input {x.shape} must be (H, W, C), filters {filters.shape} (F, F, C, K) with the "
            f"input's C and bias {bias.shape} (K,)"
        )
    layer = Conv(filters.shape[3], filters.shape[:2], stride=stride, padding=pad, dilation=dilation)
    output, _ = layer.apply(
        {"kernel": jnp.asarray(filters), "bias": jnp.asarray(bias)}, {}, jnp.asarray(x)[None]
    )
    return ConvDemo(x, filters, bias, stride, pad, dilation, np.asarray(output[0]))


def conv_demo_html(demo: ConvDemo) -> str:
    """The page: the volumes, the controls (previous, next, toggle movement) and the arithmetic."""
    data = {
        "input": demo.padded.transpose(2, 0, 1).tolist(),  # [C][H][W]
        "filters": demo.filters.transpose(3, 2, 0, 1).tolist(),  # [K][C][F][F]
        "bias": demo.bias.tolist(),
        "output": demo.output.transpose(2, 0, 1).tolist(),  # [K][H_out][W_out]
        "stride": demo.stride,
        "dilation": demo.dilation,
        "pad": demo.pad,
    }
    (height, width, channels), (size, _, _, count) = demo.padded.shape, demo.filters.shape
    out_h, out_w, _ = demo.output.shape
    title = "Convolution demo"
    body = (
        f"<p>Input {demo.input.shape[0]}x{demo.input.shape[1]}x{channels} padded by {demo.pad} "
        f"({height}x{width}x{channels}), {count} filters of {size}x{size}x{channels}, stride {demo.stride}, "
        f"dilation {demo.dilation}: output {out_h}x{out_w}x{count}, computed by jaxconv's Conv.</p>\n"
        '<p><button id="previous">previous</button> <button id="next">next</button> '
        '<button id="toggle">toggle movement</button></p>\n'
        '<div id="volumes"></div>\n<p id="arithmetic"></p>\n'
        f'<script type="application/json" id="demo-data">{_script_safe(json.dumps(data))}</script>'
    )
    return html_page(title, body, style=_STYLE, script=_SCRIPT)


def _script_safe(text: str) -> str:
    """JSON to put inside a ``<script>`` element: no ``</`` that could close it early."""
    return text.replace("</", "<\\/")


def write_conv_demo(path: str | os.PathLike[str], demo: ConvDemo | None = None) -> Path:
    """Write `conv_demo_html` of ``demo`` (default: the notes' sizes) to ``path``; returns it."""
    path = Path(path)
    path.write_text(conv_demo_html(demo or conv_demo()), encoding="utf-8")
    return path


_STYLE = """
.volume { display: inline-block; vertical-align: top; margin: 0 1.2em 1em 0; }
.volume h3 { font-size: 0.9em; margin: 0.3em 0; }
table.grid { border-collapse: collapse; margin-bottom: 0.5em; }
table.grid td { width: 2.2em; height: 1.6em; text-align: center; font-family: monospace; border: 1px solid #bbb; }
.input td { background: #e8f0ff; } .filter td { background: #ffe8e8; } .bias td, .output td { background: #e8ffe8; }
td.window { background: #5b8def !important; color: white; } td.active-filter { background: #e05b5b !important; color: white; }
td.active-bias, td.current { background: #3fae5a !important; color: white; }
#arithmetic { font-family: monospace; white-space: pre-wrap; }
"""

_SCRIPT = r"""
"use strict";
const demo = JSON.parse(document.getElementById("demo-data").textContent);
const K = demo.output.length, OH = demo.output[0].length, OW = demo.output[0][0].length;
const F = demo.filters[0][0].length, C = demo.input.length;
const show = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(3));
function grid(values, cls, id) {
  const rows = values.map((row, r) => "<tr>" + row.map((v, c) =>
    `<td id="${id}-${r}-${c}" data-value="${v}">${show(v)}</td>`).join("") + "</tr>");
  return `<table class="grid ${cls}">${rows.join("")}</table>`;
}
function column(title, slices) {
  return `<div class="volume"><h3>${title}</h3>${slices.join("")}</div>`;
}
const inputSlices = demo.input.map((s, d) => `x[:, :, ${d}]` + grid(s, "input", `x-${d}`));
let html = column(`Input volume (+pad ${demo.pad}) (${demo.input[0].length}x${demo.input[0][0].length}x${C})`, inputSlices);
for (let k = 0; k < K; k++) {
  const slices = demo.filters[k].map((s, d) => `w${k}[:, :, ${d}]` + grid(s, "filter", `w${k}-${d}`));
  slices.push(`b${k}` + grid([[demo.bias[k]]], "bias", `b${k}`));
  html += column(`Filter W${k} (${F}x${F}x${C})`, slices);
}
html += column(`Output volume (${OH}x${OW}x${K})`, demo.output.map((s, k) => `o[:, :, ${k}]` + grid(s, "output", `o-${k}`)));
document.getElementById("volumes").innerHTML = html;
let step = 0, timer = null;
const total = K * OH * OW;
function position(n) { const k = Math.floor(n / (OH * OW)), r = n % (OH * OW); return [k, Math.floor(r / OW), r % OW]; }
function render() {
  document.querySelectorAll(".window, .active-filter, .active-bias, .current").forEach((e) =>
    e.classList.remove("window", "active-filter", "active-bias", "current"));
  const [k, i, j] = position(step), terms = [];
  for (let d = 0; d < C; d++) for (let a = 0; a < F; a++) for (let b = 0; b < F; b++) {
    const r = i * demo.stride + a * demo.dilation, c = j * demo.stride + b * demo.dilation;
    document.getElementById(`x-${d}-${r}-${c}`).classList.add("window");
    document.getElementById(`w${k}-${d}-${a}-${b}`).classList.add("active-filter");
    terms.push(`${show(demo.input[d][r][c])}*${show(demo.filters[k][d][a][b])}`);
  }
  document.getElementById(`b${k}-0-0`).classList.add("active-bias");
  const cell = document.getElementById(`o-${k}-${i}-${j}`);
  cell.classList.add("current");
  const value = demo.output[k][i][j];
  document.getElementById("arithmetic").innerHTML =
    `o[${i}, ${j}, ${k}] = ${terms.join(" + ")} + b${k} (${show(demo.bias[k])})\n  = ` +
    `<span id="current-value" data-position="${k},${i},${j}" data-value="${value}">${show(value)}</span>`;
}
function move(delta) { step = (step + delta + total) % total; render(); }
document.getElementById("next").addEventListener("click", () => move(1));
document.getElementById("previous").addEventListener("click", () => move(-1));
document.getElementById("toggle").addEventListener("click", () => {
  if (timer === null) { timer = setInterval(() => move(1), 1000); } else { clearInterval(timer); timer = null; }
});
render();
timer = setInterval(() => move(1), 1000);
"""
