"""CMTA pipeline: whole-slide images and genomics to survival risk.

Stages (one module per concern, each called by the ``cmta`` command line):
slides -> tiling (segmentation + patch grid) -> features -> genomics/cohort -> models/training.
"""

__version__ = "0.1.0"
