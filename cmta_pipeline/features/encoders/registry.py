"""The patch encoders this pipeline knows, one :class:`EncoderSpec` each, named as TRIDENT
names them. Torch-free: Snakemake plans the tiling (field of view, input size) with it.

Geometry: an encoder was trained on patches of ``fov_um`` micrometres at
``magnification`` (``patch_px`` pixels at ``mpp`` um/px) shown to it at ``input_px``
pixels. The tiler cuts patches of that field of view; encoders with the same
(``fov_um``, ``input_px``) share one tiles folder.

Weights: ``hf_repo`` / ``hf_file`` on the Hugging Face hub (``gated``: accept the model's
terms on its page, then pass a token in ``HF_TOKEN``); ``sha256`` where known (the fetch
checks it and records the hash otherwise). Parameter counts are the published ones
(``params_source``); tests check the architecture built here against them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import CMTAError

#: Channel means and standard deviations of the normalisations used (on 0..1 pixels).
NORMALISATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "openai_clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "hoptimus": ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)),
    "lunit": ((0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464)),
    "kaiko": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

DEFAULT_ENCODER = "resnet50"


@dataclass(frozen=True)
class EncoderSpec:
    name: str  # TRIDENT's name
    family: str  # builder: resnet | vit | conch | swin
    arch: str  # what is built (human readable)
    dim: int  # feature dimension
    input_px: int  # side of the image the network sees
    normalisation: str  # key of NORMALISATIONS
    mpp: float  # um/px of the training patches
    patch_px: int  # their side in pixels at mpp
    output: str  # how the feature is read out of the network
    hf_repo: str  # "" = torchvision / none
    hf_file: str
    gated: bool
    licence: str
    params_m: float  # published parameter count, millions
    params_source: str
    sha256: str = ""
    notes: str = ""
    hf_repo_type: str = "model"  # "dataset" for CTransPath's
    precision: str = "fp16"  # TRIDENT's per encoder (autocast on CUDA; fp32 on CPU)
    resize_px: int = 0  # the patch is resized to this, then centre-cropped to input_px
    revision: str = ""  # Hugging Face revision pinned by the model card or TRIDENT ("": main)
    ref: str = ""  # where TRIDENT defines it (trident/patch_encoder_models/load.py lines)

    @property
    def fov_um(self) -> float:
        return round(self.mpp * self.patch_px, 3)

    @property
    def magnification(self) -> str:
        return f"{round(10 / self.mpp)}x"

    @property
    def read_px(self) -> int:
        """The side a patch is resized to before the encoder (then centre-cropped to
        ``input_px`` when larger: GigaPath's resize 256 + crop 224)."""
        return self.resize_px or self.input_px

    @property
    def seen_um(self) -> float:
        """The field of view the network sees (smaller than ``fov_um`` after a crop)."""
        return round(self.fov_um * self.input_px / self.read_px, 3)

    def geometry(self) -> str:
        """Name of the tiling this encoder needs (its tiles folder)."""
        return f"fov{self.fov_um:g}um_in{self.read_px}"

    def pixel_path(self) -> str:
        """The pixels' way into the network, for `cmta encoders`."""
        crop = (f" -> centre crop {self.input_px} ({self.seen_um:g} um)"
                if self.read_px != self.input_px else "")
        return (f"{self.fov_um:g} um = {self.patch_px} px at {self.mpp:g} um/px "
                f"({self.magnification}) -> resize {self.read_px}{crop} -> "
                f"{self.input_px} px in")


def _spec(name, family, arch, dim, input_px, norm, mpp, patch_px, output, repo, file, gated,
          licence, params_m, source, **kw) -> EncoderSpec:
    return EncoderSpec(name, family, arch, dim, input_px, norm, mpp, patch_px, output, repo,
                       file, gated, licence, params_m, source, **kw)


_CC = "CC-BY-NC-ND-4.0"
_SPECS = [
    _spec("resnet50", "resnet", "torchvision ResNet-50 through layer3 (CLAM resnet50_trunc)",
          1024, 224, "imagenet", 0.25, 512, "global average pool of layer3", "", "", False,
          "BSD-3-Clause (torchvision)", 8.54, "ResNet-50 layers conv1..layer3 (He et al. "
          "2016; CLAM resnet50_trunc); full ResNet-50 is 25.6M",
          sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
          notes="weights: torchvision IMAGENET1K_V1 (resnet50-0676ba61.pth)",
          precision="fp32", ref="trident/patch_encoder_models/load.py L669-736"),
    _spec("uni_v1", "vit", "ViT-L/16, LayerScale (timm vit_large_patch16_224)", 1024, 224,
          "imagenet", 0.5, 256, "class token", "MahmoodLab/UNI", "pytorch_model.bin", True,
          _CC, 303.0, "Chen et al. 2024, Nat Med (UNI): ViT-L/16, 0.3B; HF model card",
          ref="trident/patch_encoder_models/load.py L784-837"),
    _spec("uni_v2", "vit", "ViT-H/14, 8 registers, SwiGLU (timm vit_giant_patch14_224 "
          "configured as UNI2-h)", 1536, 224, "imagenet", 0.5, 256, "class token",
          "MahmoodLab/UNI2-h", "pytorch_model.bin", True, _CC, 681.0,
          "HF model card MahmoodLab/UNI2-h: ViT-H/14-reg8, 681M",
          precision="bf16", ref="trident/patch_encoder_models/load.py L840-898"),
    _spec("conch_v1", "conch", "ViT-B/16 at 448 + attentional pooler (CONCH visual tower)",
          512, 448, "openai_clip", 0.5, 512, "attentional pool (1 query) + LayerNorm, "
          "without proj_contrast (as TRIDENT)", "MahmoodLab/CONCH", "pytorch_model.bin",
          True, _CC, 90.0, "Lu et al. 2024, Nat Med (CONCH): ViT-B/16 image encoder, ~90M",
          precision="fp32", ref="trident/patch_encoder_models/load.py L347-390"),
    _spec("conch_v15", "conch", "ViT-L/16 built at 224 (197-row position table), run at "
          "448 with the table interpolated + attentional pooler to_q/to_kv/to_out "
          "(CONCH v1.5 visual)", 768, 448, "imagenet", 0.5, 512,
          "attentional pool (1 query) + ln_contrast, no projection (as TRIDENT)",
          "MahmoodLab/conchv1_5", "pytorch_model_vision.bin", True, _CC, 307.0,
          "TITAN paper (Ding et al. 2024): CONCH v1.5, ViT-L/16 initialised from UNI",
          ref="trident/patch_encoder_models/load.py L1294-1326; model_zoo/conchv1_5/conchv1_5.py L595-689"),
    _spec("virchow", "vit", "ViT-H/14, SwiGLU (timm vit_huge_patch14_224)", 2560, 224,
          "imagenet", 0.5, 224, "class token ++ mean of patch tokens", "paige-ai/Virchow",
          "pytorch_model.bin", True, "Apache-2.0 (non-commercial terms on HF)", 632.0,
          "Vorontsov et al. 2024, Nat Med (Virchow): ViT-H/14, 632M",
          ref="trident/patch_encoder_models/load.py L974-1046"),
    _spec("virchow2", "vit", "ViT-H/14, 4 registers, SwiGLU (timm vit_huge_patch14_224)",
          2560, 224, "imagenet", 0.5, 224, "class token ++ mean of patch tokens",
          "paige-ai/Virchow2", "pytorch_model.bin", True, _CC, 632.0,
          "Zimmermann et al. 2024 (Virchow2, arXiv:2408.00738): ViT-H/14, 632M",
          ref="trident/patch_encoder_models/load.py L1049-1122"),
    _spec("hoptimus0", "vit", "ViT-g/14, 4 registers (timm vit_giant_patch14_reg4_dinov2)",
          1536, 224, "hoptimus", 0.5, 224, "class token", "bioptimus/H-optimus-0",
          "pytorch_model.bin", True, "Apache-2.0", 1100.0,
          "Bioptimus H-optimus-0 model card: ViT-g/14, 1.1B",
          ref="trident/patch_encoder_models/load.py L1125-1181"),
    _spec("hoptimus1", "vit", "ViT-g/14, 4 registers (timm vit_giant_patch14_reg4_dinov2)",
          1536, 224, "hoptimus", 0.5, 224, "class token", "bioptimus/H-optimus-1",
          "pytorch_model.bin", True, "CC-BY-NC-ND-4.0 (H-optimus-1 terms)", 1100.0,
          "Bioptimus H-optimus-1 model card: ViT-g/14, 1.1B",
          ref="trident/patch_encoder_models/load.py L1184-1241"),
    _spec("gigapath", "vit", "ViT-g/14 layout, patch 16 (timm vit_giant_patch14_dinov2 "
          "configured as Prov-GigaPath tile encoder)", 1536, 224, "imagenet", 0.5, 256,
          "class token", "prov-gigapath/prov-gigapath", "pytorch_model.bin", True,
          "Apache-2.0 (research terms on HF)", 1134.0,
          "Xu et al. 2024, Nature (Prov-GigaPath): tile encoder ViT-g/14, 1.13B",
          resize_px=256, ref="trident/patch_encoder_models/load.py L901-971 (resize 256 + centre crop 224, L955-956)",
          notes="as its model card and TRIDENT: the 128 um patch resized to 256, centre "
          "112 um cropped at 224"),
    _spec("phikon", "vit", "ViT-B/16 (timm vit_base_patch16_224; HF transformers layout on "
          "the hub)", 768, 224, "imagenet", 0.5, 224, "class token", "owkin/phikon",
          "pytorch_model.bin", False, "Owkin non-commercial", 86.0,
          "Filiot et al. 2023 (Phikon, medRxiv): iBOT ViT-B/16, 86M",
          precision="fp32", ref="trident/patch_encoder_models/load.py L452-497"),
    _spec("phikon_v2", "vit", "ViT-L/16, LayerScale (DINOv2 layout; HF transformers on "
          "the hub)", 1024, 224, "imagenet", 0.5, 224, "class token",
          "owkin/phikon-v2", "model.safetensors", False, "Owkin non-commercial", 300.0,
          "Filiot et al. 2024 (Phikon-v2, arXiv:2409.09173): ViT-L/16, 0.3B",
          precision="fp32", ref="trident/patch_encoder_models/load.py L1244-1291"),
    _spec("ctranspath", "swin", "Swin-T/4 window 7 with convolutional stem (TransPath)", 768,
          224, "imagenet", 1.0, 256, "global average pool", "MahmoodLab/hest-bench",
          "fm_v1/ctranspath/CHIEF_CTransPath.pth", True, "GPL-3.0 (TransPath code)", 27.5,
          "Wang et al. 2022, MedIA (CTransPath): Swin-T with conv stem, 27.5M",
          hf_repo_type="dataset", notes="weights under 'model' in timm 0.5 names; 256 px "
          "at 10x as TRIDENT's README runs CHIEF's weights", precision="fp32",
          ref="trident/patch_encoder_models/load.py L393-449; README 'CTransPath-CHIEF ... --patch_size 256 --mag 10'"),
    _spec("lunit-vits8", "vit", "ViT-S/8 (DINO, timm vit_small_patch8_224)", 384, 224,
          "lunit", 0.5, 224, "class token", "1aurent/vit_small_patch8_224.lunit_dino",
          "model.safetensors", False, "Lunit non-commercial", 21.7,
          "Kang et al. 2023, CVPR (Lunit benchmarking SSL): ViT-S/8, 21.7M",
          precision="fp32", ref="trident/patch_encoder_models/load.py L739-781"),
]

_SPECS.append(
    _spec("h0-mini", "vit", "ViT-B/14, 4 registers, SwiGLU (timm vit_base_patch14_reg4_dinov2 "
          "as TRIDENT builds it; distilled from H-optimus-0)", 768, 224, "hoptimus", 0.5, 224,
          "class token", "bioptimus/H0-mini", "model.safetensors", True, _CC, 71.6,
          "no count on the model card read here: the network TRIDENT builds "
          "(load.py L1416-1423), counted", ref="trident/patch_encoder_models/load.py L1390-1454 (return_type cls_token)"))

_SPECS.append(
    _spec("midnight12k", "vit", "ViT-g/14, SwiGLU (DINOv2 giant; transformers Dinov2Model on "
          "the hub)", 1536, 224, "kaiko", 0.5, 224, "class token (TRIDENT's default "
          "return_type; the card's cls ++ mean is 3072-d)", "kaiko-ai/midnight",
          "model.safetensors", False, "MIT", 1100.0,
          "Karasikov et al. 2025 (Midnight, arXiv:2504.05186): ViT-g/14, 1.1B",
          ref="trident/patch_encoder_models/load.py L1329-1387"))
_KAIKO = "Kaiko Non-Commercial Public License"
for _n, _arch, _dim, _m in (("vits16", "ViT-S/16", 384, 21.7), ("vits8", "ViT-S/8", 384, 21.7),
                            ("vitb16", "ViT-B/16", 768, 86.0), ("vitb8", "ViT-B/8", 768, 86.0),
                            ("vitl14", "ViT-L/14, 4 registers, built at 518", 1024, 304.0)):
    _timm = {"vits16": "vit_small_patch16_224", "vits8": "vit_small_patch8_224",
             "vitb16": "vit_base_patch16_224", "vitb8": "vit_base_patch8_224",
             "vitl14": "vit_large_patch14_reg4_dinov2"}[_n]
    _SPECS.append(_spec(
        f"kaiko-{_n}", "vit", f"{_arch} (timm {_timm}; kaiko.ai DINO/DINOv2)", _dim, 224,
        "kaiko", 0.5, 256, "class token", f"1aurent/{_timm}.kaiko_ai_towards_large_pathology_fms",
        "model.safetensors", False, _KAIKO, _m,
        f"Aben et al. 2024 (arXiv:2404.15217): {_arch.split(',')[0]}; timm's count",
        precision="fp32", ref="trident/patch_encoder_models/load.py L541-666; README "
        "'--patch_size 256 --mag 20'"))

REGISTRY: dict[str, EncoderSpec] = {s.name: s for s in _SPECS}

#: Encoder names other tools write into feature files, mapped to the registry's.
ALIASES = {"resnet50_trunc": "resnet50", "uni": "uni_v1", "conch": "conch_v1",
           "conchv1_5": "conch_v15", "uni2-h": "uni_v2", "h-optimus-0": "hoptimus0",
           "h-optimus-1": "hoptimus1", "prov-gigapath": "gigapath", "phikon-v2": "phikon_v2",
           "h0_mini": "h0-mini", "midnight": "midnight12k", "midnight-12k": "midnight12k"}


def canonical(name: str) -> str:
    """The registry name of ``name`` (an alias too); the name itself if unknown."""
    key = str(name).strip()
    return ALIASES.get(key.lower(), key)


def get_spec(name: str) -> EncoderSpec:
    """The spec of a registered encoder; a one-line error listing them otherwise."""
    spec = REGISTRY.get(canonical(name))
    if spec is None:
        raise CMTAError(f"unknown encoder {name!r}; registered: {', '.join(REGISTRY)} "
                        f"(`cmta encoders` lists them)")
    return spec


def table_rows() -> list[dict]:
    """One row per encoder for `cmta encoders` and docs/features.md."""
    return [{"name": s.name, "arch": s.arch, "dim": s.dim, "input_px": s.input_px,
             "geometry": s.pixel_path(), "fov_um": s.fov_um, "mpp": s.mpp,
             "read_px": s.patch_px, "resize_px": s.read_px,
             "crop_px": s.input_px if s.read_px != s.input_px else "",
             "precision": s.precision, "norm": s.normalisation, "output": s.output,
             "weights": f"hf:{s.hf_repo}/{s.hf_file}" if s.hf_repo else "torchvision",
             "gated": "yes (HF_TOKEN)" if s.gated else "no", "licence": s.licence,
             "params_m": s.params_m, "params_source": s.params_source,
             "revision": s.revision or "main (none pinned by card or TRIDENT)",
             "reference": s.ref}
            for s in _SPECS]
