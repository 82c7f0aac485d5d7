"""GPDBN, genomic and pathological deep bilinear network (Wang et al., Bioinformatics 2021,
isfj/GPDBN ``GPDBN_Cox/networks.py``), fed from this pipeline's inputs.

Core as published (in_size 32, hidden 20, dropout .1): from a 32-d gene vector g and a
32-d pathology vector p, the flattened outer products g g^T, p p^T (intra-modal) and
g p^T (inter-modal) each pass Linear 1024 -> 20, ReLU; [g, p, three 20-d codes] (124)
-> 500 -> 256 -> 128 -> 32 (ReLU, Dropout each) -> Linear 32 -> hazards.

Our reading (the paper selects 32 genes and 32 hand-crafted image features by a
statistical filter, which has no counterpart for learned patch features):
g = Linear(sum of family sizes -> 32) of the six families concatenated, p = Linear(1024 ->
32) of the mean patch feature of the bag. The published Cox output (sigmoid scaled to
[-3, 3]) is replaced by hazards for the discrete-time NLL of the other models.
"""

from __future__ import annotations

import torch
from torch import nn

from .fusion import flat_omics
from .layers import SurvivalHead, as_bag


class GPDBN(nn.Module):
    modalities = ("path", "omics")

    def __init__(self, omic_sizes, path_dim=1024, size="small", n_bins=4, dropout=0.1,
                 in_size: int = 32, hidden: int = 20, **_):
        super().__init__()
        self.gene_input = nn.Linear(sum(omic_sizes), in_size)
        self.path_input = nn.Linear(path_dim, in_size)
        square = in_size * in_size
        self.gene_gene = nn.Sequential(nn.Linear(square, hidden), nn.ReLU())
        self.path_path = nn.Sequential(nn.Linear(square, hidden), nn.ReLU())
        self.gene_path = nn.Sequential(nn.Linear(square, hidden), nn.ReLU())
        dims = [2 * in_size + 3 * hidden, 500, 256, 128, 32]
        self.encoder = nn.Sequential(*[
            nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)) for a, b in zip(dims[:-1], dims[1:])
        ])
        self.head = SurvivalHead(32, n_bins)

    def forward(self, x_path, x_omics):
        if x_path is None:
            raise ValueError("gpdbn needs a feature bag, got None")
        g = self.gene_input(flat_omics(x_omics, "gpdbn"))  # (1, 32)
        p = self.path_input(as_bag(x_path).mean(dim=1))  # (1, 32)

        def outer(a, b):
            return (a.unsqueeze(2) * b.unsqueeze(1)).flatten(1)

        code = torch.cat([g, p, self.gene_path(outer(g, p)), self.gene_gene(outer(g, g)),
                          self.path_path(outer(p, p))], dim=1)
        return self.head(self.encoder(code))
