"""A registered encoder built and given its weights: ``random`` (seeded; tests, benchmarks),
``hub`` (the Hugging Face file of the registry, through ``huggingface_hub`` and its cache;
``HF_TOKEN`` for gated models) or the path of a local file (what ``cmta fetch-weights
--encoder NAME`` saved: compute nodes never download). ResNet-50 keeps its own builder
(:func:`cmta_pipeline.features.encoder.build_encoder`), so its features stay as they were.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from ...errors import CMTAError, load_refused
from ..encoder import RANDOM_SEED, EncoderInfo, build_encoder, sha256_file
from .conch import build_conch, conch_state
from .registry import EncoderSpec, get_spec
from .swin import build_swin, ctranspath_state
from .vit import build_vit, hf_positions, hf_vit_to_timm

log = logging.getLogger(__name__)

BUILDERS = {"vit": build_vit, "conch": build_conch, "swin": build_swin}


def build_architecture(spec: EncoderSpec) -> nn.Module:
    """The network of ``spec`` with its initial weights (on torch's default device: build
    under ``torch.device("meta")`` to count parameters without memory)."""
    if spec.family == "resnet":
        from ..encoder import ResNet50Trunc

        return ResNet50Trunc()
    return BUILDERS[spec.family](spec)


def random_architecture(spec: EncoderSpec) -> nn.Module:
    """The network with seeded random weights. A ViT (CONCH's too) is built on the meta
    device and
    filled directly (normal(0, 0.02) matrices and tokens, LayerNorm 1/0, biases 0,
    LayerScale 1, so that different patches give different features): timm's truncated-normal initialisation takes 20 s for a ViT-H on two
    cores, this a few. Networks with buffers (Swin, ResNet) are built as they are."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        if spec.family not in ("vit", "conch"):
            return build_architecture(spec)
        with torch.device("meta"):
            model = build_architecture(spec)
        if any(True for _ in model.buffers()):
            return build_architecture(spec)
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            for module in model.modules():
                for name, p in module.named_parameters(recurse=False):
                    if isinstance(module, nn.LayerNorm):
                        p.fill_(1.0 if name == "weight" else 0.0)
                    elif name == "gamma":
                        p.fill_(1.0)
                    elif name == "bias":
                        p.zero_()
                    else:
                        p.normal_(0.0, 0.02)
    return model


def read_state_file(path: Path) -> dict:
    """A state dict from a ``.safetensors`` or torch file (``weights_only``: no code runs)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise load_refused(path, exc, "weights file") from None
    if not isinstance(state, dict):
        raise CMTAError(f"{path}: not a state dict (got {type(state).__name__})")
    return state


def as_own_names(spec: EncoderSpec, state: dict, model: nn.Module) -> dict:
    """The published checkpoint's names mapped onto this package's modules."""
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], dict) and spec.family != "swin":
            state = state[key]
    for prefix in ("module.", "model.", "vit."):  # DataParallel, wrappers, transformers
        hits = [k for k in state if k.startswith(prefix)]
        if hits and 2 * len(hits) >= len(state):  # a head beside the network is left out
            state = {k[len(prefix):]: state[k] for k in hits}
    if spec.family == "conch":
        return conch_state(state)
    if spec.family == "swin":
        return ctranspath_state(state, model)
    hf = any(k.startswith(("embeddings.", "encoder.layer.")) for k in state)
    state = hf_vit_to_timm(state)
    if not any(k.startswith("trunk.") for k in state):
        state = {f"trunk.{k}": v for k, v in state.items()}
    own = model.trunk.pos_embed
    pos = state.get("trunk.pos_embed")
    if hf and pos is not None and pos.shape[1] != own.shape[1] and pos.shape[2] == own.shape[2]:
        grid = int(round((own.shape[1] - 1) ** 0.5))  # transformers interpolates at run time
        state["trunk.pos_embed"] = hf_positions(pos, grid)
    return state


def load_weights(spec: EncoderSpec, model: nn.Module, state: dict, source: str) -> None:
    """Every parameter and buffer of ``model`` from ``state``, shapes checked; a one-line
    error naming the first missing or misshapen tensor."""
    try:
        state = as_own_names(spec, state, model)
    except KeyError as exc:  # a transformers/timm-0.5 file without one of its tensors
        raise CMTAError(f"{source}: not {spec.name} weights; tensor {exc} missing") from exc
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CMTAError(f"{source}: not {spec.name} weights; {len(missing)} tensors missing "
                        f"(first: {missing[0]})")
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CMTAError(f"{source}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                        f"{spec.name} needs {tuple(own[bad[0]].shape)}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def hub_download(spec: EncoderSpec, cache_dir: str | None = None) -> Path:
    """The registry's weights file of ``spec`` from the Hugging Face hub (its cache)."""
    if not spec.hf_repo:
        raise CMTAError(f"{spec.name}: no Hugging Face weights in the registry")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise CMTAError(f"{spec.name}: downloading weights needs huggingface_hub "
                        f"(pip install huggingface_hub), or pass --weights <local file>") from exc
    try:
        path = hf_hub_download(spec.hf_repo, spec.hf_file, repo_type=spec.hf_repo_type,
                               revision=spec.revision or None,
                               token=os.environ.get("HF_TOKEN") or None, cache_dir=cache_dir)
    except Exception as exc:
        gated = (f"; {spec.hf_repo} is gated: accept its terms on huggingface.co and set "
                 f"HF_TOKEN") if spec.gated else ""
        raise CMTAError(f"{spec.name}: cannot download {spec.hf_repo}/{spec.hf_file} "
                        f"({type(exc).__name__}: {exc}){gated}") from exc
    return Path(path)


def hub_revision(path: Path) -> str:
    """The commit a file of the Hugging Face cache came from (its ``snapshots/<commit>/``
    folder), "" for a file elsewhere."""
    parts = Path(path).parts
    if "snapshots" in parts[:-1]:
        return parts[parts.index("snapshots") + 1]
    return ""


def spec_info(spec: EncoderSpec, weights: str, digest: str, revision: str = "") -> EncoderInfo:
    """What the feature file records about the encoder and its weights."""
    return EncoderInfo(spec.name, weights, digest, spec.dim, spec.normalisation,
                       spec.input_px, resize_px=spec.read_px, precision=spec.precision,
                       revision=revision)


def build_named_encoder(name: str, weights: str = "hub") -> tuple[nn.Module, EncoderInfo]:
    """The encoder ``name`` (registry) in eval mode on CPU with ``weights`` =
    ``random``, ``hub`` or a local path; ResNet-50 also takes ``imagenet``."""
    spec = get_spec(name)
    if spec.family == "resnet":
        model, info = build_encoder("imagenet" if weights == "hub" else weights)
        return model, info
    if weights == "imagenet":
        raise CMTAError(f"--weights imagenet is ResNet-50's; {spec.name} takes hub, random "
                        f"or the path of its weights")
    if weights == "random":
        model = random_architecture(spec)
        info = spec_info(spec, f"random(seed={RANDOM_SEED})", "")
    else:
        path = hub_download(spec) if weights == "hub" else Path(os.path.expanduser(weights))
        if not path.is_file():
            raise CMTAError(f"--weights {weights}: no such file; use hub, random or the path "
                            f"of {spec.name}'s weights (cmta fetch-weights --encoder "
                            f"{spec.name})")
        digest = sha256_file(path)
        if spec.sha256 and digest != spec.sha256:
            raise CMTAError(f"{path}: sha256 {digest} is not the registry's {spec.sha256} "
                            f"for {spec.name}")
        model = build_architecture(spec)
        load_weights(spec, model, read_state_file(path), str(path))
        info = spec_info(spec, f"hf:{spec.hf_repo}" if weights == "hub"
                         else f"file:{path.name}", digest,
                         hub_revision(path) if weights == "hub" else spec.revision)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info


def fetch_encoder_weights(name: str, out: str | os.PathLike) -> Path:
    """Download ``name``'s weights once, check they load into the architecture and copy
    them to ``out`` (atomically); for the workflow's local rule."""
    from ...fileio import atomic_output

    spec = get_spec(name)
    out = Path(out)
    src = hub_download(spec)
    model = build_architecture(spec)
    load_weights(spec, model, read_state_file(src), str(src))  # refuses anything else
    import shutil

    with atomic_output(out) as tmp:
        shutil.copyfile(src, tmp)
    log.info("%s weights (%s/%s) -> %s (sha256 %s)", spec.name, spec.hf_repo, spec.hf_file,
             out, sha256_file(out))
    return out
