"""The predict stage: risk for new patients from the fold models of a trained run
(``cmta predict``; rule file ``workflow/rules/predict.smk``; docs/predict.md).

>>> from cmta_pipeline.predict import predict_run
"""

from .risk import predict_run, write_predictions

__all__ = ["predict_run", "write_predictions"]
