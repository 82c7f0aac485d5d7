"""CMTA pipeline: whole-slide images and genomics to survival risk.

One sub-package per pipeline stage, each with the commands of that stage in its
``cli.py`` (docs/architecture.md): ``slides`` (sheet, segmentation, patch grid) ->
``features`` -> ``genomics`` -> ``cohort`` -> ``training`` (with ``models``) ->
``report``, ``heatmaps``, ``predict``; ``demo`` builds the synthetic demo cohort.
"""

from . import compat

__version__ = "0.2.0"

compat.install()
