"""A synthetic demo cohort with survival risk planted in slides and genomics.

Each patient has two independent latent scores, ``morphology`` and ``genomic`` (standard
normal). The planted risk is ``morphology_weight * morphology + genomic_weight * genomic``
and survival is drawn from it (log-normal times, independent uniform censoring), so that

* the slides carry one half of the risk: a patient's morphology score sets the stain
  balance (eosin pink -> haematoxylin purple), the density and size of the nuclei and how
  dark they are; all three are visible to a randomly initialised ResNet-50 (colour and
  texture statistics survive random convolutions);
* the genomics carry the other half: the RNA-seq of the genes in ``signal_families``
  (up in oncogenes, down in tumour suppressors) and the copy number of the oncogenes
  follow the genomic score, with noise; the other families are noise;
* neither modality alone can reach the planted risk's own c-index (the oracle): a model
  has to use both to get close to it.

Everything is drawn from ``seed``: the same settings give the same cohort, byte for byte
in the tables and pixel for pixel in the slides (JPEG-compressed deterministically).

Outputs (:func:`write_demo_cohort`): ``patients.tsv`` (latent scores, planted risk,
survival), ``genomics.csv`` (the MCAT/CMTA wide-table layout, read by ``cmta genomics``),
``slides/<slide_id>.tif`` (pyramidal TIFFs at 1 um/px that OpenSlide opens) and
``planted.json`` (the settings and the oracle c-indexes on the whole cohort).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from ..fileio import atomic_output, fresh_outputs, write_text_atomic
from ..slides.synthetic import BACKGROUND, Shape, render_mask
from .settings import SIGNAL_SIGN, DemoSettings, case_ids, slide_sheet
from .summary import oracle_cindexes

# --------------------------------------------------------------------------- patients


def plant_patients(settings: DemoSettings) -> pd.DataFrame:
    """One row per patient: case_id, morphology, genomic, risk, survival_months, censorship
    (1 = censored), event_months (the uncensored time, for reference)."""
    if settings.n_patients < 10:
        raise CMTAError(f"demo.n_patients: {settings.n_patients} is too few (at least 10)")
    rng = np.random.default_rng([settings.seed, 0])
    n = settings.n_patients
    morph = rng.standard_normal(n)
    genomic = rng.standard_normal(n)
    risk = settings.morphology_weight * morph + settings.genomic_weight * genomic
    event_time = settings.median_months * np.exp(-risk + settings.time_noise * rng.standard_normal(n))
    # Uniform censoring on [0, c_max], c_max set so that about censoring_fraction are censored.
    u = rng.random(n)
    c_max = _censoring_bound(event_time, settings.censoring_fraction)
    censor_time = u * c_max
    censored = censor_time < event_time
    observed = np.where(censored, censor_time, event_time)
    return pd.DataFrame({
        "case_id": case_ids(n),
        "morphology": morph,
        "genomic": genomic,
        "risk": risk,
        "survival_months": np.maximum(observed, 0.1),
        "censorship": censored.astype(int),
        "event_months": event_time,
    })


def _censoring_bound(event_time: np.ndarray, fraction: float) -> float:
    """c_max such that P(U * c_max < T) averaged over the cohort is ``fraction``."""
    if fraction <= 0:
        return float("inf")
    lo, hi = 1e-3, 1e4 * float(event_time.max())
    for _ in range(100):
        c = (lo * hi) ** 0.5
        p = np.mean(np.clip(event_time / c, 0, 1))  # P(U c < T) = min(T / c, 1)
        lo, hi = (c, hi) if p > fraction else (lo, c)
    return (lo * hi) ** 0.5


def genomic_table(patients: pd.DataFrame, families: dict[str, list[str]], settings: DemoSettings) -> pd.DataFrame:
    """The MCAT/CMTA wide table of the cohort: case_id, slide_id, survival_months,
    censorship and, per gene, ``_rnaseq`` (z-score-like), ``_cnv`` (GISTIC -2..2) and, for
    oncogenes and tumour suppressors, ``_mut`` (0/1). Signal genes follow the genomic score."""
    unknown = [f for f in settings.signal_families if f not in families]
    if unknown:
        raise CMTAError(f"demo.signal_families: {', '.join(unknown)} not in the family file ({', '.join(families)})")
    rng = np.random.default_rng([settings.seed, 1])
    n = len(patients)
    g = patients["genomic"].to_numpy()
    cols: dict[str, np.ndarray] = {}
    for family, genes in families.items():
        sign = SIGNAL_SIGN.get(family, 1.0) if family in settings.signal_families else 0.0
        for gene in genes:
            rna = sign * settings.gene_loading * g + rng.standard_normal(n)
            cnv_latent = (sign > 0) * settings.gene_loading * g + rng.standard_normal(n)
            cols[f"{gene}_rnaseq"] = rna
            cols[f"{gene}_cnv"] = np.digitize(cnv_latent, [-1.6, -0.6, 0.6, 1.6]) - 2.0
            if family in SIGNAL_SIGN:
                cols[f"{gene}_mut"] = (rng.random(n) < 0.08).astype(float)
    table = pd.DataFrame({
        "case_id": patients["case_id"],
        "slide_id": patients["case_id"] + "-DX1.tif",
        "survival_months": patients["survival_months"].round(3),
        "censorship": patients["censorship"],
    })
    genes = pd.DataFrame(cols).round(4)
    return pd.concat([table, genes[sorted(genes.columns)]], axis=1)


# --------------------------------------------------------------------------- slides


def _morphology_look(score: float) -> dict:
    """Stain and nuclei of a morphology score: riskier = purpler, denser, larger, darker nuclei."""
    t = 1.0 / (1.0 + np.exp(-1.2 * score))  # 0..1
    stroma = np.array([232, 160, 205]) * (1 - t) + np.array([190, 120, 200]) * t
    nucleus = np.array([110, 60, 160]) * (1 - t) + np.array([60, 25, 110]) * t
    return {
        "stroma": stroma,
        "nucleus": nucleus,
        "density_per_mm2": 1500 + 5000 * t,  # nuclei per mm^2 of tissue
        "radius_um": (2.5 + 2.5 * t, 4.0 + 3.0 * t),
    }


def _tissue_shapes(rng: np.random.Generator, settings: DemoSettings) -> list[Shape]:
    """One or two elliptical tissue pieces of about ``tissue_mm2`` in total."""
    w_um, h_um = settings.slide_um
    n = int(rng.integers(1, 3))
    shapes = []
    for i in range(n):
        area = settings.tissue_mm2 * 1e6 / n
        aspect = rng.uniform(0.7, 1.4)
        w = min((4 * area / np.pi * aspect) ** 0.5, 0.9 * w_um / n)
        h = min(4 * area / np.pi / w, 0.9 * h_um)
        x = (i + 0.5) * w_um / n - w / 2 + rng.uniform(-0.04, 0.04) * w_um
        y = rng.uniform(0.05 * h_um, max(0.05 * h_um, 0.95 * h_um - h))
        shapes.append(Shape("ellipse", x, y, w, h))
    return shapes


def render_demo_slide(score: float, rng: np.random.Generator, settings: DemoSettings) -> np.ndarray:
    """RGB uint8 image (H x W x 3) at ``settings.mpp`` of a specimen of this morphology score."""
    import cv2

    mpp = settings.mpp
    w_um, h_um = settings.slide_um
    mask = render_mask(_tissue_shapes(rng, settings), w_um, h_um, mpp).astype(bool)
    look = _morphology_look(score)
    h, w = mask.shape
    # stroma: stain colour with smooth (~60 um) and pixel-level variation
    coarse = cv2.resize(rng.normal(0, 8, (h // 60 + 2, w // 60 + 2)).astype(np.float32), (w, h))
    shade = coarse + rng.normal(0, 5, (h, w)).astype(np.float32)
    img = look["stroma"].astype(np.float32)[None, None, :] + shade[..., None]
    # nuclei: seeds at the score's density, grown to discs of the score's size
    n_nuclei = int(look["density_per_mm2"] * mask.sum() * mpp * mpp / 1e6)
    seeds = np.zeros((h, w), np.uint8)
    seeds[rng.integers(0, h, n_nuclei), rng.integers(0, w, n_nuclei)] = 1
    radius = max(1, int(round(np.mean(look["radius_um"]) / mpp)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    nuclei = cv2.dilate(seeds, disc).astype(bool)
    img[nuclei] = look["nucleus"] + 0.5 * shade[nuclei][:, None]
    img[~mask] = BACKGROUND
    return np.clip(img, 0, 255).astype(np.uint8)


def write_pyramid_tiff(path: str | os.PathLike, image: np.ndarray, mpp: float,
                       downsamples: tuple[int, ...] = (1, 4, 16), tile: int = 256) -> None:
    """Write ``image`` (H x W x 3 uint8 at ``mpp``) as a tiled, JPEG-compressed pyramidal TIFF
    with the pixel size in its resolution tags (OpenSlide opens it as generic TIFF)."""
    import cv2
    import tifffile

    res = 1e4 / mpp  # pixels per centimetre
    with atomic_output(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        for i, ds in enumerate(downsamples):
            h, w = -(-image.shape[0] // ds), -(-image.shape[1] // ds)
            level = image if ds == 1 else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="jpeg",
                      resolution=(res / ds, res / ds), resolutionunit="CENTIMETER",
                      subfiletype=0 if i == 0 else 1, metadata=None)


# --------------------------------------------------------------------------- cohort


def write_demo_cohort(settings: DemoSettings, families_file: str | os.PathLike, outdir: str | os.PathLike,
                      workers: int = 1) -> dict:
    """Write the demo cohort into ``outdir`` (patients.tsv, genomics.csv, slides/, planted.json);
    return the contents of planted.json. Slides are written before the tables, so that the
    tables' presence means the cohort is complete. ``workers`` processes draw the slides
    (speed only: each slide's pixels come from its own seed)."""
    out = Path(outdir)
    # the previous cohort's planted.json, then the rest: a failed run leaves none of it
    with fresh_outputs(out, ("genomics.csv", "patients.tsv", "slides"), marker="planted.json"):
        return _write_demo_cohort(settings, families_file, out, workers)


def _write_slide(path: str, case_id: str, score: float, settings: DemoSettings) -> None:
    rng = np.random.default_rng([settings.seed, 2, int(case_id.split("-")[1])])
    write_pyramid_tiff(path, render_demo_slide(score, rng, settings), settings.mpp)


def _write_slides(sheet: pd.DataFrame, scores: pd.Series, settings: DemoSettings, workers: int) -> None:
    jobs = [(row.path, row.case_id, float(score), settings) for row, score in zip(sheet.itertuples(), scores)]
    if workers <= 1:
        for job in jobs:
            _write_slide(*job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: the children need nothing re-imported (spawn would import cv2 and numpy again)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        list(pool.map(_write_slide, *zip(*jobs)))  # raises the first slide's error, if any


def _write_demo_cohort(settings: DemoSettings, families_file, out: Path, workers: int = 1) -> dict:
    from ..genomics.families import read_families

    families = read_families(families_file)
    patients = plant_patients(settings)
    table = genomic_table(patients, families, settings)
    sheet = slide_sheet(settings, out)
    _write_slides(sheet, patients["morphology"], settings, workers)
    with atomic_output(out / "genomics.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_output(out / "patients.tsv") as tmp:
        patients.to_csv(tmp, sep="\t", index=False, float_format="%.5f")
    planted = {
        "settings": asdict(settings),
        "families_file": str(families_file),
        "n_patients": len(patients),
        "censored_fraction": float(patients["censorship"].mean()),
        "cindex_whole_cohort": oracle_cindexes(patients),
    }
    write_text_atomic(out / "planted.json", json.dumps(planted, indent=2) + "\n")
    return planted
