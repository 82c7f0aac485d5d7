"""Pathology-only MIL baselines of Table 1 as their reference implementations build them.

* ``AttMIL``: deep attention MIL for survival, MCAT's ``MIL_Attention_FC_surv`` (AMIL):
  Linear 1024-512, ReLU, Dropout; gated attention (512 -> 256 -> 1); attention pooling;
  the rho layer Linear 512-256, ReLU, Dropout; Linear 256 -> hazards.
* ``CLAMSB`` / ``CLAMMB``: CLAM's single- and multi-branch networks (Lu et al. 2021,
  ``models/model_clam.py``) with the time bins as classes: SB pools the bag once and a
  Linear 512 -> bins gives the hazard logits; MB has one attention branch and one Linear
  512 -> 1 per bin. The instance classifiers are kept; :func:`clam_instance_loss` is
  CLAM's instance-clustering loss for them (see docs/models.md, "Table 1 baselines").
* ``TransMIL``: the 512-d design of Shao et al. 2021 (``models/TransMIL.py``): Linear
  1024-512, ReLU; class token; TransLayer (8 heads of 64, 256 landmarks), PPEG,
  TransLayer; LayerNorm; Linear 512 -> hazards.

All map ``(x_path (M, D) or (1, M, D), x_omics ignored)`` to the output dict of
:class:`~.layers.SurvivalHead` (hazards, survival, risk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import PathologyTransformer, SurvivalHead, as_bag

#: CLAM / AMIL widths: input -> embedding -> attention hidden (their "small" / "big")
MIL_SIZES = {"small": [512, 256], "large": [512, 384]}


def survival_outputs(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Hazard logits (1, T) -> the dict of :class:`~.layers.SurvivalHead`."""
    logits = logits.float()
    hazards = torch.sigmoid(logits)
    survival = torch.cumprod(1 - hazards, dim=1)
    return {"logits": logits, "hazards": hazards, "survival": survival, "risk": -survival.sum(dim=1)}


def _bag(x_path, model: str) -> torch.Tensor:
    if x_path is None:
        raise ValueError(f"{model} needs a feature bag, got None")
    return as_bag(x_path)[0]  # (M, D)


class GatedAttention(nn.Module):
    """Gated attention scores (Ilse et al. 2018): (M, L) -> (M, K) unnormalised scores.

    ``tanh(V h) * sigmoid(U h)``, each followed by dropout, then Linear D -> K.
    """

    def __init__(self, dim_in: int, dim_hidden: int, dropout: float, n_branches: int = 1):
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(dim_hidden, n_branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention_c(self.attention_a(h) * self.attention_b(h))


class AttMIL(nn.Module):
    """Deep attention MIL with the rho layer (MCAT's AMIL baseline)."""

    modalities = ("path",)

    def __init__(self, omic_sizes=None, path_dim=1024, size="small", n_bins=4, dropout=0.25, **_):
        super().__init__()
        embed, hidden = MIL_SIZES[size]
        self.pathology_embedding = nn.Sequential(nn.Linear(path_dim, embed), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(embed, hidden, dropout)
        self.rho = nn.Sequential(nn.Linear(embed, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = SurvivalHead(hidden, n_bins)

    def forward(self, x_path, x_omics=None):
        h = self.pathology_embedding(_bag(x_path, "attmil"))  # (M, 512)
        a = self.attention(h).transpose(0, 1).softmax(dim=1)  # (1, M)
        out = self.head(self.rho(a @ h))
        out["attention"] = a
        return out


class CLAMSB(nn.Module):
    """CLAM single branch for discrete-time survival (bins as classes)."""

    modalities = ("path",)
    n_branches = 1

    def __init__(self, omic_sizes=None, path_dim=1024, size="small", n_bins=4, dropout=0.25,
                 k_sample: int = 8, **_):
        super().__init__()
        embed, hidden = MIL_SIZES[size]
        self.k_sample = k_sample
        self.n_bins = n_bins
        self.pathology_embedding = nn.Sequential(nn.Linear(path_dim, embed), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(embed, hidden, dropout, self._branches(n_bins))
        self._bag_classifiers(embed, n_bins)
        # one binary in-class / out-of-class patch classifier per bin, as in CLAM
        self.instance_classifiers = nn.ModuleList(nn.Linear(embed, 2) for _ in range(n_bins))

    def _branches(self, n_bins: int) -> int:
        return 1

    def _bag_classifiers(self, embed: int, n_bins: int) -> None:
        self.classifiers = nn.Linear(embed, n_bins)

    def _logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifiers(pooled)  # (1, 512) -> (1, T)

    def forward(self, x_path, x_omics=None):
        h = self.pathology_embedding(_bag(x_path, type(self).__name__))  # (M, 512)
        a = self.attention(h).transpose(0, 1).softmax(dim=1)  # (K, M)
        out = survival_outputs(self._logits(a @ h))
        out["attention"] = a
        out["instance_logits"] = self._instance_logits(a, h)
        return out

    def _instance_logits(self, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(T, 2k, 2): per bin t, its classifier on the k most and k least attended patches
        of branch t (SB: the single branch), the k most first."""
        k = min(self.k_sample, h.shape[0])
        rows = []
        for t, clf in enumerate(self.instance_classifiers):
            scores = a[min(t, a.shape[0] - 1)]
            top = torch.topk(scores, k).indices
            bottom = torch.topk(-scores, k).indices
            rows.append(clf(torch.cat([h[top], h[bottom]], dim=0)))
        return torch.stack(rows)


class CLAMMB(CLAMSB):
    """CLAM multi-branch: one attention branch and one Linear 512 -> 1 per bin."""

    def _branches(self, n_bins: int) -> int:
        return n_bins

    def _bag_classifiers(self, embed: int, n_bins: int) -> None:
        self.classifiers = nn.ModuleList(nn.Linear(embed, 1) for _ in range(n_bins))

    def _logits(self, pooled: torch.Tensor) -> torch.Tensor:
        # pooled: (T, 512), row t pooled by branch t
        return torch.cat([clf(pooled[t]) for t, clf in enumerate(self.classifiers)]).unsqueeze(0)


def clam_instance_loss(out: dict, label: int) -> torch.Tensor:
    """CLAM's instance-clustering loss for the true bin ``label`` (not subtyping):
    cross-entropy of bin ``label``'s classifier, top-k patches labelled 1, bottom-k 0.
    CLAM weights it 0.3 against 0.7 for the bag loss."""
    logits = out["instance_logits"][label]  # (2k, 2)
    k = logits.shape[0] // 2
    target = torch.cat([torch.ones(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)])
    return F.cross_entropy(logits.float(), target.to(logits.device))


class TransMIL(nn.Module):
    """TransMIL, 512-d as designed: Linear 1024-512 + ReLU, class token, TransLayer, PPEG,
    TransLayer, LayerNorm, Linear 512 -> hazards."""

    modalities = ("path",)

    def __init__(self, omic_sizes=None, path_dim=1024, size="small", n_bins=4,
                 attention="nystrom", ppeg=True, short_exact=False, **_):
        super().__init__()
        # short_exact=False: bags under 256 patches take the published pseudo-inverse too
        dim = 512
        self.pathology_embedding = nn.Sequential(nn.Linear(path_dim, dim), nn.ReLU())
        self.pathology_encoder = PathologyTransformer(dim, attention, ppeg, short_exact)
        # the reference draws its class token from N(0, 1) and keeps PyTorch's default init
        nn.init.normal_(self.pathology_encoder.cls_token)
        self.head = SurvivalHead(dim, n_bins)

    def forward(self, x_path, x_omics=None):
        h = self.pathology_embedding(_bag(x_path, "transmil").unsqueeze(0))  # (1, M, 512)
        p, _ = self.pathology_encoder(h)
        return self.head(p)
