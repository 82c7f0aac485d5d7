"""The patch encoder: torchvision ResNet-50 through layer3, global average pooling, 1024-d.

This is CLAM's ``resnet50_trunc``: conv1 .. layer3 of ResNet-50 (stride 16, 1024 channels),
then the mean over the spatial grid. The submodules keep torchvision's names, so a full
torchvision ResNet-50 state dict (as downloaded, with ``layer4.*`` and ``fc.*``) loads into
it directly; the extra keys are ignored, every missing key is an error.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CMTAError, load_refused

log = logging.getLogger(__name__)

FEATURE_DIM = 1024
ENCODER_NAME = "resnet50_trunc"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's file name of ResNet50_Weights.IMAGENET1K_V1 (the weights CLAM uses).
IMAGENET_FILE = "resnet50-0676ba61.pth"
#: the full sha256 of that file (its name carries only the first 8 hex digits, which is
#: all torch hub checks, and only when it downloads): a cached file is checked against it.
IMAGENET_SHA256 = "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a"
RANDOM_SEED = 0


class ResNet50Trunc(nn.Module):
    """ResNet-50 up to and including layer3, then global average pooling.

    Input: (B, 3, H, W) float, ImageNet-normalised. Output: (B, 1024).
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        full = resnet50(weights=None)
        self.conv1 = full.conv1
        self.bn1 = full.bn1
        self.relu = full.relu
        self.maxpool = full.maxpool
        self.layer1 = full.layer1
        self.layer2 = full.layer2
        self.layer3 = full.layer3
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.pool(x), 1)


@dataclass(frozen=True)
class EncoderInfo:
    """What the features were computed with; written into the feature file's attributes."""

    name: str
    weights: str  # "imagenet1k_v1", "random(seed=0)" or "file:<path>"
    weights_sha256: str  # "" when unknown (random)
    dim: int = FEATURE_DIM  # feature dimension
    normalisation: str = "imagenet"  # key of encoders.registry.NORMALISATIONS
    input_px: int | None = None  # the input side the network needs; None: any (ResNet)
    resize_px: int | None = None  # patches resized to this, centre-cropped to input_px
    precision: str = "fp32"  # the encoder's own (TRIDENT's), what --precision auto takes on CUDA
    revision: str = ""  # the Hugging Face commit the weights came from ("" unknown)


def _load_state_dict_into(model: ResNet50Trunc, state: dict, source: str) -> None:
    if not isinstance(state, dict):
        raise CMTAError(f"{source}: not a state dict (got {type(state).__name__})")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    # Tolerate the prefixes that wrappers add (DataParallel "module.", CLAM-style "model.").
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CMTAError(
            f"{source}: not a ResNet-50 state dict; {len(missing)} keys missing "
            f"(first: {missing[0]}). Pass torchvision's resnet50 weights "
            f"(cmta fetch-weights) or a state dict saved from this encoder"
        )
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CMTAError(
            f"{source}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
            f"expected {tuple(own[bad[0]].shape)}; not ResNet-50 weights"
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_encoder(weights: str = "imagenet") -> tuple[ResNet50Trunc, EncoderInfo]:
    """The encoder in eval mode on CPU, with ``weights`` = ``imagenet``, ``random`` or a path.

    ``imagenet`` goes through torchvision's weights API (downloaded once into the torch hub
    cache, ``$TORCH_HOME``); ``random`` is seeded and meant for tests and demos only;
    a path loads a local state dict with ``torch.load(weights_only=True)``.
    """
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = ResNet50Trunc()
        info = EncoderInfo(ENCODER_NAME, f"random(seed={RANDOM_SEED})", "")
    elif weights == "imagenet":
        model = ResNet50Trunc()
        _load_state_dict_into(model, imagenet_state(), "torchvision ResNet50_Weights.IMAGENET1K_V1")
        info = EncoderInfo(ENCODER_NAME, "imagenet1k_v1", IMAGENET_SHA256)
    else:
        path = Path(os.path.expanduser(weights))
        if not path.is_file():
            raise CMTAError(
                f"--weights {weights}: no such file; use imagenet, random or the path of a "
                f"state dict (e.g. from `cmta fetch-weights`)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise load_refused(path, exc, "weights file") from None
        model = ResNet50Trunc()
        _load_state_dict_into(model, state, str(path))
        info = EncoderInfo(ENCODER_NAME, f"file:{path.name}", sha256_file(path))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info


def check_sha256(path: Path, expected: str, what: str, hint: str = "") -> str:
    """``path``'s sha256, which must be ``expected`` (64 hex digits); else an error naming
    the file and both hashes. Returns the digest."""
    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise CMTAError(f"{what}: {expected!r} is not a sha256 (64 hex digits)")
    digest = sha256_file(path)
    if digest != expected:
        raise CMTAError(f"{path}: sha256 {digest} is not {expected} ({what}){hint}")
    return digest


def check_weights_sha256(weights: str | None, expected: str) -> None:
    """A configured hash (``--weights-sha256``, ``features.weights_sha256``) checked
    against the local weights file before it is loaded."""
    if weights in (None, "imagenet", "hub", "random"):
        raise CMTAError(f"--weights-sha256 checks a local weights file; --weights is {weights or 'the default'} "
                        "(imagenet and the registry's files are checked against their known hashes)")
    path = Path(os.path.expanduser(weights))
    if not path.is_file():
        raise CMTAError(f"--weights {weights}: no such file")
    check_sha256(path, expected, "--weights-sha256", "; the file is not the one configured")


def imagenet_state() -> dict:
    """torchvision's ResNet50_Weights.IMAGENET1K_V1, from the torch hub cache (downloaded
    there once). The cached file is hashed in full before it is used: torchvision's file
    name carries only a prefix of the hash, and torch hub checks it only on download."""
    from torchvision.models import ResNet50_Weights

    cached = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
    hint = "; the torch hub cache holds other weights under the ImageNet name: remove that file"
    if cached.is_file():
        check_sha256(cached, IMAGENET_SHA256, "torchvision's ResNet50_Weights.IMAGENET1K_V1", hint)
    try:
        state = ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # no network, proxy, corrupt cache ...
        raise CMTAError(
            f"--weights imagenet: cannot get torchvision's ResNet50_Weights.IMAGENET1K_V1 "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). On a machine "
            f"with internet run `cmta fetch-weights -o resources/weights/{IMAGENET_FILE}` and pass "
            f"--weights with that file, or copy it into {cached.parent}"
        ) from None
    check_sha256(cached, IMAGENET_SHA256, "torchvision's ResNet50_Weights.IMAGENET1K_V1", hint)
    return state


def fetch_imagenet_weights(out: str | os.PathLike, url: str | None = None, sha256: str | None = None) -> Path:
    """Download torchvision's ResNet50_Weights.IMAGENET1K_V1 once and save them at ``out``.

    ``out`` holds the downloaded bytes themselves (so that its sha256 is the published
    file's, which the workflow's ``ensure(sha256=...)`` checks): copied from the torch hub
    cache when it is there, else downloaded; either way hashed in full against
    ``sha256`` (default: the known :data:`IMAGENET_SHA256`), or, for a ``url`` override
    (a mirror, or file:// in tests) without ``sha256``, against the hash prefix in its
    file name (``-<prefix>.``). Then the file must load into the encoder (no code runs:
    ``weights_only``) before it is renamed to ``out``: nothing is written otherwise.
    """
    import shutil

    from torchvision.models import ResNet50_Weights

    from ..fileio import atomic_output

    out = Path(out)
    src = url or ResNet50_Weights.IMAGENET1K_V1.url
    expected = sha256 or (IMAGENET_SHA256 if url is None else None)
    name = os.path.basename(urllib.parse.urlparse(src).path)
    prefix = re.search(r"-([a-f0-9]+)\.", name)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    with atomic_output(out) as tmp:
        if cached.is_file():
            shutil.copyfile(cached, tmp)
        else:
            try:
                torch.hub.download_url_to_file(src, str(tmp), progress=False)
            except Exception as exc:
                raise CMTAError(
                    f"cannot download {src} ({type(exc).__name__}: {exc}); run this on a machine "
                    f"with internet and copy {out.name} to the offline nodes"
                ) from None
        where, digest = (cached if cached.is_file() else src), sha256_file(tmp)
        if expected and digest != expected.strip().lower():
            raise CMTAError(f"{where}: sha256 {digest} is not {expected} (the expected hash of {name}); "
                            "nothing written" + ("; the torch hub cache holds other weights under this "
                                                 "name: remove that file" if where == cached else ""))
        if not expected and (prefix is None or not digest.startswith(prefix.group(1))):
            raise CMTAError(f"{where}: its sha256 {digest} does not start with the hash in its "
                            "name (or the name has none: give --sha256); nothing written")
        try:
            state = torch.load(tmp, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise load_refused(where, exc, "weights file") from None
        _load_state_dict_into(ResNet50Trunc(), state, str(where))  # refuses anything else
    log.info("ImageNet ResNet-50 weights -> %s (sha256 %s)", out, sha256_file(out))
    return out


@torch.no_grad()
def calibrate_batchnorm(model: ResNet50Trunc, images: torch.Tensor) -> ResNet50Trunc:
    """Set every BatchNorm's running statistics from ``images`` (B, 3, H, W, normalised).

    Only for ``random`` weights in tests and benchmarks: a freshly initialised ResNet with
    identity BatchNorm gives nearly the same vector for every patch (cosine ~1 between
    different patches), which would make precision checks meaningless. With statistics
    from real patches its activations are normalised as in a trained network.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batch
    model.train()
    model(images)
    model.eval()
    return model
