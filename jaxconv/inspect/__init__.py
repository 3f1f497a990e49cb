"""See inside a ConvNet: every layer's output, attribution maps, the notes' pictures and pages.

    import jaxconv as jc

    outputs = jc.inspect.activations(net, params, state, images)   # {path: volume}, () the logits
    cams = jc.inspect.grad_cam(net, params, state, images, layer="conv_2")
    jc.inspect.activation_figure(outputs, image=images[0]).savefig("activations.png")
    jc.inspect.write_conv_demo("conv-demo.html")                   # the notes' convolution demo

- `activations`: the volumes, by the layers' paths in ``params`` (`jaxconv.core.walk`).
- `attribution`: `saliency` (and SmoothGrad), `grad_cam` (and Grad-CAM++), `occlusion`.
- `figures`: the notes' activation figure, feature maps, heat-map overlays (Matplotlib, PNG).
- `conv_demo`: the notes' convolution demo as one self-contained HTML page.
- `page`: self-contained HTML pages (inline CSS and JS, images as ``data:`` URIs).
"""

from jaxconv.inspect.activations import activations, as_path, layer_paths, run_net
from jaxconv.inspect.attribution import class_scores, grad_cam, occlusion, saliency

__all__ = [
    "activations",
    "as_path",
    "class_scores",
    "grad_cam",
    "layer_paths",
    "occlusion",
    "run_net",
    "saliency",
]
