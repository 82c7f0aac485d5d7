"""Attention heatmaps: which patches each genomic family and the pathology class token
attend to, drawn over the slide thumbnail (CMTA; attention-MIL models where meaningful).

Attention is captured with forward hooks on the model's submodules; the model and its
forward are unchanged. Panels (one column of ``attention`` each):

* ``<family>`` (CMTA with cross-modal attention): the row of ``genomics_to_pathology`` (the
  genomics -> pathology cross-modal attention: the K family tokens are queries, the patch
  tokens keys) of that family's token: softmax(q k^T / sqrt(C)) over the patch tokens.
* ``pathology class token`` (CMTA, TransMIL, DualTrans): the class token's row of the
  self-attention in the pathology encoder's last layer (``pathology_encoder.layer2.attn``),
  mean over heads. With Nystrom attention (published) this is the row the layer effectively
  applies to the values, a1 @ pinv(a2) @ a3 (landmark softmaxes as in Xiong et al. 2021): it
  reproduces the layer's output for that token (without the depthwise residual convolution
  over the values, which is not attention) and, unlike a softmax row, may have small
  negative entries; for sequences no longer than the landmarks, the softmax over the real
  keys plus the zero pads; with exact attention, the softmax row.
* ``attention`` (AttMIL): the gated-attention pooling weights.

The pathology encoder pads the M patch tokens to a square by repeating the first ones;
the attention to a repeated token is added to the patch it repeats, so a family row sums to
1 over the patient's patches. A patient with several slides is one bag: each slide's rows
are its patches' share of that bag's attention.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CMTAError
from ..fileio import atomic_output

log = logging.getLogger(__name__)

PATHOLOGY_PANEL = "pathology class token"


def attention_row(attn, x: torch.Tensor, query: int = 0) -> torch.Tensor:
    """The attention row of token ``query`` in a :class:`NystromAttention` layer.

    attn: the layer; x: its input (1, N, C). Returns (heads, N): the weights the layer
    applies to the N value vectors for that query (see the module doc for each mode).
    """
    from ..models.nystrom import moore_penrose_pinv

    n = x.shape[1]
    q, k, _ = attn._split(x)  # (1, h, N, d)
    q, k = q[0], k[0]
    s = attn.scale
    m = attn.num_landmarks
    qi = q[:, query:query + 1]  # (h, 1, d)
    if attn.mode == "exact":
        return (qi @ k.transpose(-1, -2) * s).softmax(-1)[:, 0]
    if n <= m and attn.short_exact:
        logits = qi @ k.transpose(-1, -2) * s
        if m - n > 0:
            null = torch.full_like(logits[..., :1], math.log(m - n))
            return torch.cat([logits, null], -1).softmax(-1)[:, 0, :-1]
        return logits.softmax(-1)[:, 0]
    pad = (-n) % m
    length = (n + pad) // m
    q_pad, k_pad = F.pad(q, (0, 0, pad, 0)), F.pad(k, (0, 0, pad, 0))
    q_land = q_pad.reshape(q.shape[0], m, length, -1).mean(2)
    k_land = k_pad.reshape(k.shape[0], m, length, -1).mean(2)
    a1 = (qi @ k_land.transpose(-1, -2) * s).softmax(-1)  # (h, 1, m)
    a2 = (q_land @ k_land.transpose(-1, -2) * s).softmax(-1)  # (h, m, m)
    a3 = (q_land @ k_pad.transpose(-1, -2) * s).softmax(-1)  # (h, m, N + pad)
    inv = moore_penrose_pinv(a2.unsqueeze(0), attn.pinv_iterations)[0]
    return (a1 @ inv @ a3)[:, 0, pad:]


def cross_attention(module, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Weights of a :class:`CrossModalAttention`: query (1, Nq, C), context (1, Nk, C) ->
    (Nq, Nk), softmax(q k^T / sqrt(C)) with the module's in-projections."""
    wq, wk, _ = module.in_proj_weight.chunk(3)
    bq, bk, _ = module.in_proj_bias.chunk(3)
    q, k = F.linear(query[0], wq, bq), F.linear(context[0], wk, bk)
    return (q @ k.T / math.sqrt(q.shape[-1])).softmax(-1)


def fold_padding(values: torch.Tensor, m: int) -> np.ndarray:
    """(..., side*side) attention over the padded patch grid -> (..., m) per patch: the
    pathology encoder's position j holds patch j mod m (the first tokens repeated)."""
    v = values.detach().double().cpu().numpy()
    flat = v.reshape(-1, v.shape[-1])
    idx = np.arange(v.shape[-1]) % m
    out = np.zeros((len(flat), m))
    for row, src in zip(out, flat):
        np.add.at(row, idx, src)
    return out.reshape(v.shape[:-1] + (m,))


@torch.no_grad()
def bag_attention(model, bag: torch.Tensor, omics: list[torch.Tensor] | None,
                  family_names: list[str]) -> tuple[list[str], np.ndarray, float]:
    """Run ``model`` once on a patient and capture its attention to the patches.

    bag: (M, D); omics: one 1-D tensor per family (or None). Returns (panel names,
    values (M, panels), risk). Raises CMTAError for a model without patch attention.
    """
    captured: dict[str, tuple] = {}
    hooks = []

    def keep(name):
        def hook(module, args, output):
            captured[name] = (module, tuple(a.detach() for a in args), output)
        return hook

    enc = getattr(model, "pathology_encoder", None)
    if enc is not None:
        hooks.append(enc.layer2.attn.register_forward_hook(keep("encoder")))
    if getattr(model, "cross_attention", False) and hasattr(model, "genomics_to_pathology"):
        hooks.append(model.genomics_to_pathology.register_forward_hook(keep("cross")))
    # attention-MIL pooling (AttMIL, CLAM-SB/MB, PORPOISE, M3IF) returns its softmax weights
    # as out["attention"], (branches, M)
    pooled = isinstance(getattr(model, "attention", None), torch.nn.Module)
    if not hooks and not pooled:
        raise CMTAError(f"{type(model).__name__} has no attention over patches to draw")
    model.eval()
    try:
        out = model(bag, omics)
    finally:
        for h in hooks:
            h.remove()
    m = bag.shape[-2]
    names, cols = [], []
    if "cross" in captured:
        module, (query, context), _ = captured["cross"]
        w = cross_attention(module, query, context)  # (K, side*side)
        names += list(family_names) if len(family_names) == w.shape[0] else [f"family_{i + 1}" for i in range(w.shape[0])]
        cols.append(fold_padding(w, m).T)
    if "encoder" in captured:
        module, (x,), _ = captured["encoder"]
        row = attention_row(module, x.float(), 0).mean(0)[1:]  # drop the class token's own key
        names.append(PATHOLOGY_PANEL)
        cols.append(fold_padding(row, m)[:, None])
    if pooled and "attention" in out:
        a = out["attention"].float().reshape(-1, m).double().cpu().numpy()  # (branches, M)
        names += ["attention"] if len(a) == 1 else [f"attention_bin_{k + 1}" for k in range(len(a))]
        cols.append(a.T)
    return names, np.hstack(cols), float(out["risk"].float()[0])


def write_attention(path: str | os.PathLike, values: np.ndarray, names: list[str],
                    coords: np.ndarray, **attrs) -> None:
    """``<slide_id>.attention.h5``: ``attention`` (patches, panels) float32 with attribute
    ``panels``, and ``coords`` (patches, 2) in the same order; ``attrs`` on the file."""
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("attention", data=np.asarray(values, np.float32))
            ds.attrs["panels"] = np.array(names, dtype=object)
            f.create_dataset("coords", data=np.asarray(coords, np.int64))
            for k, v in attrs.items():
                f.attrs[k] = v


def draw_heatmaps(slide_path: str | os.PathLike | None, coords: np.ndarray, patch_size: int,
                  values: np.ndarray, names: list[str], stem: str | Path, title: str,
                  thumb_px: int = 1024) -> list[Path]:
    """One panel per column of ``values`` over the slide thumbnail (or a blank canvas when
    the slide is not given), patches coloured by their attention percentile within the
    panel (as CLAM does), one colour bar; ``<stem>.png`` (and nothing else)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.colors import Normalize

    coords = np.asarray(coords, float)
    extent = coords.max(0) + patch_size
    thumb = None
    if slide_path is not None:
        import openslide

        with openslide.OpenSlide(str(slide_path)) as s:
            extent = np.array(s.dimensions, float)
            thumb = np.asarray(s.get_thumbnail((thumb_px, thumb_px)).convert("RGB"))
    scale = (thumb.shape[1] / extent[0]) if thumb is not None else thumb_px / extent.max()
    h, w = (thumb.shape[:2] if thumb is not None else (int(extent[1] * scale) + 1, int(extent[0] * scale) + 1))
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows * h / w + 0.6), squeeze=False)
    cmap = plt.get_cmap("jet")
    for ax, j in zip(axes.flat, range(len(names))):
        pct = (pd.Series(values[:, j]).rank().to_numpy() - 0.5) / len(values) * 100  # percentile in the panel
        grid = np.full((h, w, 4), 0.0)
        for (x, y), p in zip(coords * scale, pct):
            x0, y0 = int(x), int(y)
            x1, y1 = max(x0 + 1, int(x + patch_size * scale)), max(y0 + 1, int(y + patch_size * scale))
            grid[y0:y1, x0:x1] = cmap(p / 100)
            grid[y0:y1, x0:x1, 3] = 0.5
        if thumb is not None:
            ax.imshow(thumb)
        ax.imshow(grid)
        ax.set_title(names[j], fontsize=9)
        ax.axis("off")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.colorbar(plt.cm.ScalarMappable(Normalize(0, 100), cmap), ax=axes, shrink=0.8,
                 label="attention percentile within the panel")
    path = Path(f"{stem}.png")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return [path]


# --------------------------------------------------------------------------- one run


def read_slide_coords(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(coords (N, 2) level-0 top-left x, y; patch side in level-0 pixels) of a
    ``<slide_id>.features.h5`` (or a CLAM/TRIDENT h5 with the same datasets)."""
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f:
                raise CMTAError(f"{path}: no dataset 'coords' (heatmaps need the patch positions)")
            ds = f["coords"]
            size = ds.attrs.get("patch_size_level0", f.attrs.get("patch_size_level0", ds.attrs.get("patch_size")))
            coords = np.asarray(ds[()], np.int64)
    except OSError as exc:
        raise CMTAError(f"{path}: unreadable ({exc})") from None
    if size is None:
        raise CMTAError(f"{path}: coords have no 'patch_size_level0' attribute")
    return coords, int(size)


def slide_paths_from_tiles(tiles_dir: str | os.PathLike) -> dict[str, str]:
    """slide_id -> slide file, from the ``slide_path`` attribute of each ``<slide_id>.coords.h5``
    (the workflow's ``tiles/<slide_id>/`` folders, or a flat folder as ``cmta tile -o`` writes)."""
    paths = {}
    root = Path(tiles_dir)
    for f in sorted([*root.glob("*.coords.h5"), *root.glob("*/*.coords.h5")]):
        try:
            with h5py.File(f, "r") as h5:
                p = h5.attrs.get("slide_path", h5["coords"].attrs.get("slide_path") if "coords" in h5 else None)
        except OSError:
            continue  # an unreadable coords file only costs that slide its thumbnail
        if p is not None:
            paths[f.name[: -len(".coords.h5")]] = str(p)
    return paths


def choose_cases(run_dir: str | os.PathLike, cases: list[str] | None, top_k: int) -> list[tuple[str, int, str]]:
    """(case_id, fold where it is held out, why chosen) for the given cases, or the
    ``top_k`` highest- and lowest-risk held-out patients (by their risk percentile within
    their fold, since each fold model has its own risk scale)."""
    import pandas as pd

    from ..predict.risk import fold_dirs, percentile_of

    frames = []
    for k, d in fold_dirs(run_dir).items():
        p = d / "predictions.tsv"
        if p.is_file():
            pred = pd.read_csv(p, sep="\t", dtype={"case_id": str})
            pred["fold"] = k
            pred["percentile"] = percentile_of(pred["risk"].to_numpy(float), pred["risk"].to_numpy(float))
            frames.append(pred)
    if not frames:
        raise CMTAError(f"{run_dir}: no fold_<k>/predictions.tsv")
    pred = pd.concat(frames, ignore_index=True)
    if cases:
        missing = [c for c in cases if c not in set(pred["case_id"])]
        if missing:
            raise CMTAError(f"{run_dir}: case(s) {', '.join(missing)} are held out in no fold of this run")
        return [(c, int(pred.loc[pred.case_id == c, "fold"].iloc[0]), "configured") for c in cases]
    order = pred.sort_values(["percentile", "risk"])
    k = min(top_k, len(order) // 2)
    high = [(r.case_id, int(r.fold), f"highest risk #{i + 1}") for i, r in enumerate(order[::-1][:k].itertuples())]
    low = [(r.case_id, int(r.fold), f"lowest risk #{i + 1}") for i, r in enumerate(order[:k].itertuples())]
    return high + low


def heatmaps_for_case(run_dir, cohort_dir, case: str, fold: int, features_dir, outdir,
                      slide_paths: dict[str, str] | None = None, why: str = "") -> list[dict]:
    """Attention of fold ``fold``'s model (the one that held ``case`` out) on the case's
    bag; one ``<slide_id>.attention.h5`` and ``<slide_id>.heatmap.png`` per slide."""
    from ..cohort.files import load_fold
    from ..features.files import find_feature_file, load_features
    from ..models import modalities
    from ..training.fold import load_checkpoint

    model_path = Path(run_dir) / f"fold_{fold}" / "model.pt"
    model, ckpt = load_checkpoint(model_path)
    fd = load_fold(cohort_dir, fold)
    if case not in fd.patients.index:
        raise CMTAError(f"{cohort_dir}: case {case!r} is not in fold {fold}")
    slide_ids = list(fd.patients.loc[case, "slide_ids"])
    if not slide_ids:
        raise CMTAError(f"{cohort_dir}: case {case!r} has no slides")
    feats, coords, sizes = [], [], []
    for sid in slide_ids:
        f = find_feature_file(features_dir, sid)
        if f is None:
            raise CMTAError(f"no feature file for slide {sid!r} under {features_dir}")
        feats.append(load_features(f))
        c, size = read_slide_coords(f)
        if len(c) != len(feats[-1]):
            raise CMTAError(f"{f}: {len(c)} coords for {len(feats[-1])} feature rows")
        coords.append(c)
        sizes.append(size)
    omics = None
    if "omics" in modalities(ckpt["model"]["name"]):
        omics = [torch.from_numpy(np.asarray(a, np.float32)) for a in fd.omics[case]]
    bag = torch.from_numpy(np.concatenate(feats))
    names, values, risk = bag_attention(model, bag, omics, list(ckpt.get("family_names") or fd.family_names))
    rows, start = [], 0
    outdir = Path(outdir)
    for sid, c, size in zip(slide_ids, coords, sizes):
        part = values[start:start + len(c)]
        start += len(c)
        h5 = outdir / f"{sid}.attention.h5"
        write_attention(h5, part, names, c, case_id=case, slide_id=sid, fold=fold, risk=risk,
                        model=ckpt["model"]["name"], patch_size_level0=size)
        path = (slide_paths or {}).get(sid)
        if path is not None and not Path(path).is_file():
            log.warning("slide %s: %s not found; heatmap drawn without the thumbnail", sid, path)
            path = None
        title = (f"{case} / {sid}: {ckpt['model']['name']} fold {fold} (held out), risk {risk:.3f}"
                 + (f", {why}" if why else ""))
        png = draw_heatmaps(path, c, size, part, names, outdir / f"{sid}.heatmap", title)[0]
        rows.append({"case_id": case, "slide_id": sid, "fold": fold, "risk": risk, "chosen": why,
                     "patches": len(c), "attention": h5.name, "heatmap": png.name})
        log.info("%s / %s: %d patches, %d panels -> %s", case, sid, len(c), len(names), png)
    return rows
