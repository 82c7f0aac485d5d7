"""Checkpoints of the authors' code (FT-ZHOU-ZZZ/CMTA, ``models/cmta/network.py``).

``convert_official_state_dict`` renames the parameters of a state dict saved by the
authors' ``CMTA`` class to this project's names, so that ``build_model("cmta", ...)``
(same size and fusion) loads it and computes the same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: the authors' prefix -> this project's (longest prefixes first where they nest)
PREFIXES: tuple[tuple[str, str], ...] = (
    ("pathomics_fc.", "pathology_embedding."),
    ("genomics_fc.", "genomic_embedding.families."),
    ("pathomics_encoder.", "pathology_encoder."),
    ("pathomics_decoder.", "pathology_decoder."),
    ("genomics_encoder.", "genomic_encoder."),
    ("genomics_decoder.", "genomics_decoder."),
    ("P_in_G_Att.", "pathology_to_genomics."),
    ("G_in_P_Att.", "genomics_to_pathology."),
    ("classifier.", "head.classifier."),
    ("mm.", "fusion."),
)

#: inside the bilinear fusion (``mm``): the authors' name -> this project's
BILINEAR: dict[str, str] = {
    "linear_h1.0.": "h1.0.",
    "linear_z1.0.": "z1.",
    "linear_o1.0.": "o1.0.",
    "linear_h2.0.": "h2.0.",
    "linear_z2.0.": "z2.",
    "linear_o2.0.": "o2.0.",
    "encoder1.0.": "encoder1.0.",
    "encoder2.0.": "encoder2.0.",
}


def _rename(key: str) -> str:
    for theirs, ours in PREFIXES:
        if key.startswith(theirs):
            rest = key[len(theirs):]
            if theirs == "mm." and not rest[:1].isdigit():  # bilinear fusion
                for b_theirs, b_ours in BILINEAR.items():
                    if rest.startswith(b_theirs):
                        return ours + b_ours + rest[len(b_theirs):]
                break
            return ours + rest
    raise KeyError(key)


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict of the authors' CMTA to this project's parameter names.

    Accepts the dict itself or a checkpoint holding it under ``state_dict``/``model``,
    and keys with a ``module.`` prefix (DataParallel). Values are kept as they are.
    An unknown key raises ``KeyError`` naming it. Load the result with
    ``build_model("cmta", omic_sizes, size=..., fusion=...).load_state_dict(...)``.
    """
    for wrapper in ("state_dict", "model"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        try:
            out[_rename(name)] = value
        except KeyError:
            raise KeyError(f"state dict key {key!r} is not a parameter of the authors' CMTA") from None
    return out
