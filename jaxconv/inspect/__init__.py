"""See inside a ConvNet: every layer's output, attribution maps, the notes' pictures and pages.

    import jaxconv as jc

    outputs = jc.inspect.activations(net, params, state, images)   # {path: volume}, () the logits
    cams = jc.inspect.grad_cam(net, params, state, images, layer="conv_2")
    jc.inspect.activation_figure(outputs, image=images[0]).savefig("activations.png")
    jc.inspect.write_conv_demo("conv-demo.html")                   # the notes' convolution demo

- `capture`: `activations`, the volumes, by the layers' paths in ``params`` (`jaxconv.core.walk`).
- `attribution`: `saliency` (and SmoothGrad), `grad_cam` (and Grad-CAM++), `occlusion`.
- `figures`: the notes' activation figure, feature maps, heat-map overlays (Matplotlib, PNG).
- `demo_page`: `conv_demo`, the notes' convolution demo as one self-contained HTML page.
- `page`: self-contained HTML pages (inline CSS and JS, images as ``data:`` URIs).
"""

from jaxconv.inspect.attribution import class_scores, grad_cam, occlusion, saliency
from jaxconv.inspect.capture import activations, as_path, last_conv_path, layer_paths, run_net
from jaxconv.inspect.demo_page import ConvDemo, conv_demo, conv_demo_html, convolve, write_conv_demo
from jaxconv.inspect.figures import activation_figure, feature_maps, overlay_figure, volume_columns
from jaxconv.inspect.page import data_uri, figure_png, html_page, image_tag

__all__ = [
    "ConvDemo",
    "activation_figure",
    "activations",
    "as_path",
    "class_scores",
    "conv_demo",
    "conv_demo_html",
    "convolve",
    "data_uri",
    "feature_maps",
    "figure_png",
    "grad_cam",
    "html_page",
    "image_tag",
    "last_conv_path",
    "layer_paths",
    "occlusion",
    "overlay_figure",
    "run_net",
    "saliency",
    "volume_columns",
    "write_conv_demo",
]
