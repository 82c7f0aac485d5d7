"""Training recipes: ``cmta`` (every model trained as CMTA's run.sh trains CMTA: SGD, lr
1e-3, 30 epochs, one patient per step; the default) or ``reference`` (a baseline trained as
its own authors' code trains it, where that code trains a survival model on these TCGA
cohorts). The source of every setting is in docs/models.md ("Training recipes").

MCAT's and PORPOISE's training loops add the L1 penalty after dividing the NLL by the
gradient accumulation (``loss / gc + loss_reg``); this loop divides the whole loss, so the
reference ``l1`` is their ``lambda_reg`` times ``grad_accum``: the same gradient.

Every reference recipe of a baseline also trains in fp32 (``amp: false``; their code has no
autocast) and keeps the model after the last epoch under every protocol (``selection:
final``; their code selects no epoch: it saves the last one and reports its c-index).
"""

from __future__ import annotations

import dataclasses
import logging

from ..errors import CMTAError
from .settings import TrainSettings

log = logging.getLogger(__name__)

RECIPES = ("cmta", "reference")

#: MCAT's main.py defaults (mahmoodlab/MCAT @ b9cca63, main.py lines 115-126): Adam, lr 2e-4,
#: weight decay (--reg) 1e-5, gradient accumulation (--gc) 32, 20 epochs, alpha_surv 0;
#: PORPOISE's main.py has the same (mahmoodlab/PORPOISE @ 3390dc4, main.py lines 135-145)
#: fp32 and the last epoch: core_utils.train uses no autocast and saves the model after its
#: last epoch (--early_stopping False: MCAT main.py l. 128, PORPOISE main.py l. 147; MCAT
#: utils/core_utils.py l. 202 saves the model after the loop)
_MAHMOODLAB = {"optimizer": "adam", "lr": 2e-4, "weight_decay": 1e-5, "grad_accum": 32,
               "epochs": 20, "scheduler": "none", "censor_weight": 0.0, "l1": 0.0,
               "weighted_sampler": True, "amp": False, "selection": "final"}

#: model -> the settings its authors' code trains it with
REFERENCE: dict[str, dict] = {
    # MCAT's SNN runs: --reg_type omic (l1_reg_all: every weight), --lambda_reg 1e-4
    # (results/ICCV/SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32_sig)
    "snn": {**_MAHMOODLAB, "l1": 1e-4 * 32},
    "attmil": dict(_MAHMOODLAB),  # MCAT docs/Commands.md "Attention MIL", --model_type amil
    "mcat": dict(_MAHMOODLAB),  # MCAT docs/Commands.md "MCAT", --model_type mcat
    "mcat_omic": dict(_MAHMOODLAB),  # MCAT's genomic arm, trained by the same main.py
    # PORPOISE docs/Commands.md, "MMF": --reg_type pathomic, i.e. utils.l1_reg_modules (L1 on
    # fc_omic and mm: here the genomic network and the fusion) at main.py's --lambda_reg 1e-5
    "porpoise": {**_MAHMOODLAB, "l1": 1e-5 * 32, "l1_modules": ("genomic_embedding", "fusion")},
    # CMTA's reference is its own run.sh: the cmta recipe (the defaults)
    "cmta": {},
}


def apply_recipe(model: str, recipe: str, settings: TrainSettings) -> tuple[TrainSettings, str]:
    """``settings`` under ``recipe`` for ``model``: (the settings, the recipe actually used).

    ``cmta`` returns the settings unchanged. ``reference`` replaces the optimisation
    settings with :data:`REFERENCE`'s for the model; a model without a reference recipe
    (its authors' code trains no survival model on these cohorts: CLAM, TransMIL, M3IF,
    GPDBN, HFBSurv, this project's own networks) keeps the cmta recipe, with a warning,
    and ``"cmta"`` is returned."""
    if recipe not in RECIPES:
        raise CMTAError(f"training recipe: {recipe!r} is not one of {', '.join(RECIPES)}")
    model = model.lower()
    if recipe == "cmta":
        return settings, "cmta"
    if model not in REFERENCE:
        log.warning("recipe reference: %s has no reference recipe (docs/models.md); trained with "
                    "the cmta recipe, recorded as recipe cmta", model)
        return settings, "cmta"
    changes = REFERENCE[model]
    for key, value in changes.items():
        log.info("recipe reference (%s): training.%s = %s (was %s)", model, key, value,
                 getattr(settings, key))
    return dataclasses.replace(settings, **changes).validate(), "reference"
