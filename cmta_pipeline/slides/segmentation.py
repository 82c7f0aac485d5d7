"""Tissue segmentation on a low-resolution image of the slide (CLAM's recipe, in physical units).

Brightfield (H&E): HSV saturation, median blur, Otsu (or fixed) threshold, morphological
closing, contours with holes (``cv2.RETR_CCOMP``), tissue and holes filtered by area.
Fluorescence: the same on brightness (tissue is bright on black). Every size is given in
micrometres so the same settings mean the same thing at 20x and 40x.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import CMTAError

PRESETS: dict[str, dict] = {
    # Surgical resections (TCGA diagnostic slides): large pieces, ignore specks and debris.
    "resection": dict(min_tissue_area_um2=100_000.0, min_hole_area_um2=50_000.0, max_n_holes=10),
    # Needle biopsies and small fragments: keep small pieces.
    "biopsy": dict(min_tissue_area_um2=10_000.0, min_hole_area_um2=5_000.0, max_n_holes=20),
}


#: ``auto`` is Otsu for brightfield and the triangle method for fluorescence, whose
#: histogram is one dark background peak with a long bright tail.
THRESHOLD_METHODS = ("auto", "otsu", "triangle")


@dataclass
class TilingParams:
    """Segmentation and patch-grid settings (the ``tiling:`` config section)."""

    preset: str = "resection"
    patch_size_px: int = 512
    target_mpp: float = 0.25
    encoder_input_px: int = 224
    step_fraction: float = 1.0
    stain: str = "brightfield"
    seg_mpp: float = 8.0  # preferred pixel size of the segmentation image (finer for small slides)
    threshold: float | str = "auto"
    min_threshold: float = 8.0
    black_threshold: float = 20.0
    median_blur_um: float = 50.0
    close_um: float = 64.0
    min_tissue_area_um2: float | None = None
    min_hole_area_um2: float | None = None
    max_n_holes: int | None = None
    keep_rule: str = "fraction"
    min_tissue_fraction: float = 0.5
    allow_upsampling: bool = False
    qc_max_px: int = 1536
    _explicit: set = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self):
        for key in ("patch_size_px", "target_mpp", "encoder_input_px", "step_fraction", "seg_mpp", "qc_max_px"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise CMTAError(f"tiling.{key}: must be a positive finite number, got {value!r}")
        if self.preset not in PRESETS:
            raise CMTAError(f"tiling.preset: unknown preset {self.preset!r} (choose {', '.join(PRESETS)})")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.stain not in ("brightfield", "fluorescence"):
            raise CMTAError(f"tiling.stain: must be brightfield or fluorescence, got {self.stain!r}")
        if self.keep_rule not in ("fraction", "four_point_hard", "four_point_easy", "center"):
            raise CMTAError(f"tiling.keep_rule: unknown rule {self.keep_rule!r}")
        if isinstance(self.threshold, str) and self.threshold not in THRESHOLD_METHODS:
            raise CMTAError(
                f"tiling.threshold: one of {', '.join(THRESHOLD_METHODS)} or a number 0-255, got {self.threshold!r}"
            )

    @classmethod
    def from_mapping(cls, values: dict | None, source: str = "tiling") -> "TilingParams":
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(values) - names)
        if unknown:
            raise CMTAError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**values)

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}

    @property
    def patch_um(self) -> float:
        """Side of a patch in micrometres (128 for 512 px at 0.25 um/px)."""
        return self.patch_size_px * self.target_mpp

    @property
    def encoder_mpp(self) -> float:
        """Pixel size the encoder sees: the patch side over the encoder input (0.571 um/px)."""
        return self.patch_um / self.encoder_input_px


@dataclass
class Tissue:
    """Segmentation result on the low-resolution image.

    ``mask`` is uint8 (1 = tissue kept, holes removed), ``contours``/``holes`` are OpenCV
    contours in mask pixels (``holes[i]`` belongs to ``contours[i]``), ``mpp`` is the mask's
    pixel size and ``threshold`` the value used.
    """

    mask: np.ndarray
    contours: list
    holes: list
    mpp: float
    threshold: float
    signal_mask: np.ndarray  # thresholded pixels before contour filling (for QC and checks)

    @property
    def area_um2(self) -> float:
        return float(self.mask.sum()) * self.mpp**2


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k if k % 2 == 1 else k + 1


def tissue_signal(rgb: np.ndarray, params: TilingParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel tissue signal (0-255) and the pixels too dark to be tissue."""
    if params.stain == "brightfield":
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        signal = hsv[..., 1]
        dark = hsv[..., 2] < params.black_threshold  # scanner borders, not tissue
    else:
        signal = rgb.max(axis=2)
        dark = np.zeros(signal.shape, bool)
    return signal, dark


def check_stain(rgb: np.ndarray, params: TilingParams, name: str = "slide") -> None:
    """Refuse to run the brightfield detector on a dark-background (fluorescence) scan.

    On such a scan dark, noisy background pixels look saturated and would be taken for
    tissue, so say what the slide looks like and how to tell the stain instead.
    """
    if params.stain != "brightfield":
        return
    brightness = float(np.median(rgb.max(axis=2)))
    if brightness < 80:
        raise CMTAError(
            f"{name}: looks like a fluorescence scan (dark background, median brightness "
            f"{brightness:.0f}/255), not brightfield H&E; set stain: fluorescence for this slide "
            "(--stain fluorescence, or the stain column of the slide sheet)"
        )


def segment_tissue(rgb: np.ndarray, mpp: float, params: TilingParams) -> Tissue:
    """Segment tissue in an RGB image whose pixels are ``mpp`` micrometres wide."""
    signal, dark = tissue_signal(rgb, params)
    k = _odd(params.median_blur_um / mpp)
    if k > 1:
        signal = cv2.medianBlur(np.ascontiguousarray(signal), min(k, 255))
    method = params.threshold
    if method == "auto":
        method = "otsu" if params.stain == "brightfield" else "triangle"
    if method in ("otsu", "triangle"):
        flag = cv2.THRESH_OTSU if method == "otsu" else cv2.THRESH_TRIANGLE
        auto, _ = cv2.threshold(signal, 0, 255, cv2.THRESH_BINARY + flag)
        thr = max(float(auto), params.min_threshold)
    else:
        thr = float(params.threshold)
    binary = ((signal > thr) & ~dark).astype(np.uint8)
    c = int(round(params.close_um / mpp))
    if c > 1:
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((c, c), np.uint8))

    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    px_area = mpp**2
    kept, kept_holes = [], []
    if hierarchy is not None:
        hierarchy = hierarchy[0]  # rows: next, previous, first child, parent
        for i in np.flatnonzero(hierarchy[:, 3] == -1):
            holes = [contours[j] for j in np.flatnonzero(hierarchy[:, 3] == i)]
            hole_areas = [cv2.contourArea(h) * px_area for h in holes]
            tissue_area = cv2.contourArea(contours[i]) * px_area - sum(hole_areas)
            if tissue_area < params.min_tissue_area_um2:
                continue
            big = [h for h, a in sorted(zip(holes, hole_areas), key=lambda t: -t[1]) if a >= params.min_hole_area_um2]
            kept.append(contours[i])
            kept_holes.append(big[: params.max_n_holes])
    # Largest first, each piece then its holes: a piece lying inside another's hole is
    # smaller than that piece, so it is drawn after the hole was cleared.
    order = sorted(range(len(kept)), key=lambda i: -cv2.contourArea(kept[i]))
    kept, kept_holes = [kept[i] for i in order], [kept_holes[i] for i in order]
    mask = np.zeros(binary.shape, np.uint8)
    for contour, holes in zip(kept, kept_holes):
        cv2.drawContours(mask, [contour], -1, 1, thickness=cv2.FILLED)
        if holes:
            cv2.drawContours(mask, holes, -1, 0, thickness=cv2.FILLED)
    return Tissue(mask=mask, contours=kept, holes=kept_holes, mpp=mpp, threshold=thr, signal_mask=binary)
