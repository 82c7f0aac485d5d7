"""Import paths of version 0.1 that moved when the package took one sub-package per stage.

``import cmta_pipeline.feature_files`` (and ``from cmta_pipeline.losses import ...``, ...)
keeps working: each old dotted name is an alias of the module that now holds the code, so
both names give the same module object. New code imports the new paths
(docs/architecture.md).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module -> the module that now holds its code
MOVED = {
    "cmta_pipeline.slide": "cmta_pipeline.slides.wsi",
    "cmta_pipeline.segmentation": "cmta_pipeline.slides.segmentation",
    "cmta_pipeline.patching": "cmta_pipeline.slides.patching",
    "cmta_pipeline.qc": "cmta_pipeline.slides.qc",
    "cmta_pipeline.tiling": "cmta_pipeline.slides.tiling",
    "cmta_pipeline.synthetic": "cmta_pipeline.slides.synthetic",
    "cmta_pipeline.feature_files": "cmta_pipeline.features.files",
    "cmta_pipeline.gdc": "cmta_pipeline.genomics.gdc",
    "cmta_pipeline.losses": "cmta_pipeline.training.losses",
    "cmta_pipeline.evaluation": "cmta_pipeline.report.metrics",
    "cmta_pipeline.figures": "cmta_pipeline.report.figures",
    "cmta_pipeline.comparison": "cmta_pipeline.report.comparison",
    "cmta_pipeline.protocol": "cmta_pipeline.report.protocol",
    "cmta_pipeline.prediction": "cmta_pipeline.predict.risk",
    "cmta_pipeline.demo_cohort": "cmta_pipeline.demo.cohort",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and hands back the module that now holds the code."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModules())
