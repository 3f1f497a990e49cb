"""Tools that read a net's description and shapes without training it: the per-layer accounting
(`summary`), training memory, receptive fields, the notes' layer-pattern notation (`pattern`),
FC -> CONV surgery and im2col, the textbook convolution.

>>> import jaxconv as jc
>>> jc.analysis.receptive_field(jc.serial(jc.Conv(8, 3), jc.Conv(8, 3)), (-1, 32, 32, 3))
Field(size=(5, 5), jump=(1, 1))
"""

from jaxconv.analysis import im2col, surgery
from jaxconv.analysis.accounting import Row, Summary, summary
from jaxconv.analysis.fields import Field, layer_fields, receptive_field, widest
from jaxconv.analysis.memory import Memory, MemoryModel
from jaxconv.analysis.notation import pattern
from jaxconv.analysis.surgery import crop_scores, fc_to_conv, sliding_scores, total_stride

__all__ = [
    "Field",
    "Memory",
    "MemoryModel",
    "Row",
    "Summary",
    "crop_scores",
    "fc_to_conv",
    "im2col",
    "layer_fields",
    "pattern",
    "receptive_field",
    "sliding_scores",
    "summary",
    "surgery",
    "total_stride",
    "widest",
]
