"""M3IF, multi-modal multi-instance fusion (Li et al., MICCAI 2021,
yfzon/Multi-modal-Multi-instance-Learning ``models/mil_net.py``, ``MILFusion`` with one
image scale and MMTM fusion), with genomics as the tabular modality.

Patches: 4 x (Linear 1024-1024, LeakyReLU) ("feature fine-tuning"); the bag mean is the
global image vector. MMTM (squeeze: Linear over [tab, image] -> 2 (32 + 1024) / 4, ReLU;
excitation: sigmoid gates for each modality) recalibrates the tabular vector and the
global image vector, and its image gate reweights every patch's channels. Instance
attention: Linear([patch, global].detach-global) 2048 -> 1024, LeakyReLU, -> 1, softmax
over patches. Output: [Linear 32-32 of the gated tabular vector, attention-pooled
patches, gated global vector] (2080) -> Linear 2080-2080, Dropout .5 -> Linear -> hazards.

Our reading: the 32-d tabular vector (clinical data through TabNet in the paper) is one SNN
block (Linear, ELU, AlphaDropout .25) on the six families concatenated; the binary logit
becomes one logit per time bin.
"""

from __future__ import annotations

import torch
from torch import nn

from .fusion import flat_omics
from .layers import as_bag, snn_block
from .mil import survival_outputs


class MMTM(nn.Module):
    """Multimodal transfer module for two vectors: (1, dt), (1, di) -> gated copies + image gate."""

    def __init__(self, dim_tab: int, dim_img: int, ratio: int = 4):
        super().__init__()
        squeeze = int(2 * (dim_tab + dim_img) / ratio)
        self.fc_squeeze = nn.Linear(dim_tab + dim_img, squeeze)
        self.fc_tab = nn.Linear(squeeze, dim_tab)
        self.fc_img = nn.Linear(squeeze, dim_img)

    def forward(self, tab, img):
        e = torch.relu(self.fc_squeeze(torch.cat([tab, img], dim=1)))
        gate_tab, gate_img = torch.sigmoid(self.fc_tab(e)), torch.sigmoid(self.fc_img(e))
        return tab * gate_tab, img * gate_img, gate_img


class M3IF(nn.Module):
    modalities = ("path", "omics")

    def __init__(self, omic_sizes, path_dim=1024, size="small", n_bins=4, tab_dim: int = 32,
                 fine_tuning_layers: int = 4, **_):
        super().__init__()
        self.genomic_embedding = snn_block(sum(omic_sizes), tab_dim)
        layers: list[nn.Module] = []
        for _ in range(fine_tuning_layers):
            layers += [nn.Linear(path_dim, path_dim), nn.LeakyReLU()]
        self.feature_fine_tuning = nn.Sequential(*layers)
        self.mmtm = MMTM(tab_dim, path_dim)
        self.table_feature_ft = nn.Linear(tab_dim, tab_dim)
        self.instance_gate = nn.Sequential(nn.Linear(2 * path_dim, path_dim), nn.LeakyReLU(),
                                           nn.Linear(path_dim, 1))
        out_dim = 2 * path_dim + tab_dim
        self.classifier = nn.Sequential(nn.Linear(out_dim, out_dim), nn.Dropout(0.5), nn.Linear(out_dim, n_bins))

    def forward(self, x_path, x_omics):
        if x_path is None:
            raise ValueError("m3if needs a feature bag, got None")
        tab = self.genomic_embedding(flat_omics(x_omics, "m3if"))  # (1, 32)
        h = self.feature_fine_tuning(as_bag(x_path)[0])  # (M, D)
        tab, glob, gate = self.mmtm(tab, h.mean(dim=0, keepdim=True))
        h = h * gate
        a = self.instance_gate(torch.cat([h, glob.detach().expand_as(h)], dim=1))  # (M, 1)
        a = a.transpose(0, 1).softmax(dim=1)
        z = torch.cat([self.table_feature_ft(tab), a @ h, glob], dim=1)
        out = survival_outputs(self.classifier(z))
        out["attention"] = a
        return out
