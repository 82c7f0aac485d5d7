"""The features stage's commands: `cmta extract` (patch features of one slide or several) and `cmta fetch-weights` (the encoder's weights, once, for offline nodes)."""

from __future__ import annotations

import argparse

# ---- cmta extract ---------------------------------------------------------------


def _positive(v: str) -> int:
    i = int(v)
    if i < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return i


def add_extract_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="SLIDE COORDS",
                   help="the whole-slide image (anything OpenSlide reads) and its "
                   "<slide_id>.coords.h5 (from `cmta tile`, or CLAM's); more pairs encode "
                   "more slides in this one process, one after the other")
    p.add_argument("-o", "--outdir", required=True,
                   help="writes <slide_id>.features.h5 and <slide_id>.pt here")
    p.add_argument("--slide-id", action="append",
                   help="output name, once per slide (default: the coords file's slide_id "
                   "attribute, else the slide file name without extension)")
    p.add_argument("--tile-status", action="append",
                   help="the slide's `cmta tile --status` file, once per slide: a slide whose "
                   "tiling failed gets empty feature files marked failed instead (what the "
                   "workflow's multi-slide jobs, features.slides_per_job, need)")
    p.add_argument("--encoder", default="resnet50",
                   help="the patch encoder, a name of `cmta encoders` (resnet50, uni_v1, "
                   "conch_v1, virchow2, ...); its input size and normalisation come with "
                   "it. Default: resnet50 (CLAM's resnet50_trunc, 1024-d)")
    p.add_argument("--weights", default=None,
                   help="hub (the registry's Hugging Face file, downloaded once into the "
                   "hub cache; HF_TOKEN for gated models), imagenet (resnet50 only: "
                   "torchvision IMAGENET1K_V1), random (seeded; tests and demos only) or the "
                   "path of a local file (from `cmta fetch-weights`, for offline nodes). "
                   "Default: imagenet for resnet50, hub for the others")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="patches per batch (default: 32 on CPU, 256 on CUDA)")
    p.add_argument("--workers", type=int, default=None,
                   help="reader processes, each opens the slide once and hands over items "
                   "of 32 patches (on CUDA) joined into the model's batch; 0 = read in the "
                   "main process (default: 1 on CPU, where the model is the bottleneck; on "
                   "CUDA the job's CPUs (affinity, cgroup quota, SLURM_CPUS_PER_TASK) minus "
                   "2, as many as fit in half of the free /dev/shm, with a warning if fewer)")
    p.add_argument("--reader", default="auto",
                   choices=["auto", "openslide", "tiles", "tiles-half", "nvjpeg"],
                   help="how reader processes read patches. auto (default): tiles where the "
                   "slide's level is JPEG tiles in a TIFF/SVS (aperio, generic-tiff), else "
                   "openslide. openslide: OpenSlide read_region, every format. tiles: the "
                   "JPEG tiles decoded by libjpeg-turbo, OpenSlide's pixels bit for bit, "
                   "about 4x faster per reader on CUDA (where the GPU resizes), 2.5x on "
                   "CPU. tiles-half "
                   "(departure): tiles decoded at half size, faster, other features. nvjpeg "
                   "(departure, CUDA only): readers fetch the compressed tiles, the GPU "
                   "decodes them. The reader used is recorded in the feature file")
    p.add_argument("--threads", type=_positive, default=None,
                   help="torch CPU threads (default: the job's CPUs on CPU, 2 on CUDA)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: the encoder's own on CUDA (TRIDENT's; `cmta encoders`), "
                   "fp32 on CPU (bf16: an option on CPUs with native bf16). Reduced "
                   "precision is autocast, checked against fp32 (docs/features.md)")
    p.add_argument("--input-px", type=_positive, default=None,
                   help="encoder input side (default: the coords file's encoder_input_px, "
                   "else 224; 256 reproduces older CLAM-era features)")
    p.add_argument("--read-at", choices=["coords", "level0"], default="coords",
                   help="coords: read each patch at the coords file's level (fast); level0: "
                   "read it at level 0 and resize with PIL bilinear, CLAM-identical pixels")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="a patch that cannot be decoded: fail (name it and stop) or skip it "
                   "(left out of the outputs and counted)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="run the encoder through torch.compile (inductor, frozen weights; "
                   "CUDA graphs on CUDA), checked on the first batch against eager fp32 "
                   "(cosine >= 0.9999, else eager fp32). auto: on CPU when the slide has at "
                   "least --compile-min-patches patches, except fp32 on AVX-512 CPUs, where "
                   "it was measured to gain nothing; on CUDA not (no gain measured yet) "
                   "unless --compile-min-patches is given (default: auto)")
    p.add_argument("--compile-min-patches", type=_positive, default=None,
                   help="patches from which --compile auto compiles (default: 512 on CPU, "
                   "where compiling paid on 2 cores; none on CUDA, not measured yet)")
    p.add_argument("--compile-cache", default=None,
                   help="folder for inductor's compiled code, shared by the jobs of a cohort "
                   "so that only the first one pays the full compilation (default: "
                   "$TORCHINDUCTOR_CACHE_DIR, else torch's default under /tmp)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue a killed run from the batches it wrote (a hidden "
                   ".<slide_id>.features.partial beside the outputs, used only if made with "
                   "the same settings); --no-resume starts afresh (default: resume)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar with patches/s (default: only on a terminal)")


def _jobs(args: argparse.Namespace):
    from ..errors import CMTAError
    from . import SlideJob

    if len(args.inputs) % 2:
        raise CMTAError(f"cmta extract takes SLIDE COORDS pairs, got {len(args.inputs)} "
                        f"paths: {' '.join(args.inputs)}")
    pairs = list(zip(args.inputs[::2], args.inputs[1::2]))
    per_slide = {}
    for name in ("slide_id", "tile_status"):
        values = getattr(args, name)
        if values is not None and len(values) != len(pairs):
            raise CMTAError(f"--{name.replace('_', '-')} is given {len(values)} times for "
                            f"{len(pairs)} slides: give it once per slide or not at all")
        per_slide[name] = values or [None] * len(pairs)
    return [SlideJob(slide, coords, sid, status) for (slide, coords), sid, status
            in zip(pairs, per_slide["slide_id"], per_slide["tile_status"])]


def add_extract_check_arguments(p: argparse.ArgumentParser) -> None:
    """`cmta extract`'s arguments, with the checks of its inputs."""
    add_extract_arguments(p)
    p.add_argument("--weights-sha256", default=None, metavar="HEX",
                   help="the sha256 the local --weights file must have (checked before it "
                   "is loaded; a mismatch is an error). Default: not checked beyond the "
                   "known hashes of imagenet and the registry's files")


def run_extract(args: argparse.Namespace) -> int:
    from . import ExtractOptions, extract_slides

    opts = ExtractOptions(
        weights=args.weights, encoder=args.encoder, device=args.device, batch_size=args.batch_size,
        workers=args.workers, reader=args.reader, precision=args.precision,
        input_px=args.input_px,
        read_at=args.read_at, on_error=args.on_error, threads=args.threads,
        progress=args.progress, compile=args.compile,
        compile_min_patches=args.compile_min_patches,
        compile_cache=args.compile_cache, resume=args.resume, weights_sha256=args.weights_sha256,
    )
    extract_slides(_jobs(args), args.outdir, opts)
    return 0


# ---- cmta fetch-weights ---------------------------------------------------------


def add_fetch_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True,
                   help="where to save the weights, e.g. resources/weights/resnet50-0676ba61.pth")
    p.add_argument("--encoder", default="resnet50",
                   help="whose weights: resnet50 (torchvision, default) or any name of `cmta "
                   "encoders` (its Hugging Face file; huggingface_hub and, for gated models, "
                   "HF_TOKEN needed); checked to load into the encoder before it is saved")
    p.add_argument("--url", default=None,
                   help="resnet50: download from here instead of torchvision's URL (a "
                   "mirror); the file name must keep torchvision's -<sha256 prefix>. part, "
                   "or give --sha256")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="resnet50: the full sha256 the file must have (default: that of "
                   "torchvision's IMAGENET1K_V1 for its URL)")


def run_fetch_weights(args: argparse.Namespace) -> int:
    from .encoders.registry import get_spec

    if get_spec(args.encoder).family == "resnet":
        from .encoder import fetch_imagenet_weights

        fetch_imagenet_weights(args.output, url=args.url, sha256=args.sha256)
    else:
        from .encoders.build import fetch_encoder_weights

        fetch_encoder_weights(args.encoder, args.output)
    return 0


# ---- cmta encoders ---------------------------------------------------------------


def add_encoders_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["table", "tsv", "markdown"], default="table",
                   help="table (default), tsv (every field) or markdown (docs/features.md)")


def run_encoders(args: argparse.Namespace) -> int:
    from .encoders.registry import table_rows

    rows = table_rows()
    if args.format == "tsv":
        print("\t".join(rows[0]))
        for r in rows:
            print("\t".join(str(v) for v in r.values()))
        return 0
    cols = ["name", "dim", "geometry", "precision", "norm", "weights", "gated", "licence",
            "params_m"]
    if args.format == "markdown":
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print("| " + " | ".join(str(r[c]) for c in cols) + " |")
        return 0
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(width[c]) for c in cols))
    return 0


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "extract": (add_extract_check_arguments, run_extract),
    "fetch-weights": (add_fetch_weights_arguments, run_fetch_weights),
    "encoders": (add_encoders_arguments, run_encoders),
}
