"""What the genomics stage produces in memory: :class:`GenomicData`, a patient x feature
matrix whose columns are named ``GENE_<modality>``, with survival, the patients left out
and an audit of what was read from which file."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

MODALITIES = ("rnaseq", "cnv", "mut")


@dataclass
class GenomicData:
    """Genomic features and survival of the patients of one cohort.

    ``matrix``: index ``case_id``, one float column per feature ``GENE_<modality>``
    (NaN where a value is missing). ``survival``: index ``case_id``, columns
    ``survival_months`` (> 0, or >= 0 when zero follow-up is kept) and ``censorship``
    (1 = censored). ``dropped``: patients seen in some input but not kept, columns
    ``case_id``, ``reason``. ``audit``: rows (source, item, count, detail) saying what
    was read from which file (see :func:`write_genomics`).
    """

    matrix: pd.DataFrame
    survival: pd.DataFrame
    dropped: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["case_id", "reason"])
    )
    audit: list[tuple[str, str, int, str]] = field(default_factory=list)
