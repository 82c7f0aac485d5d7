"""cmta train: one model on one cross-validation fold of a `cmta cohort` folder."""

from __future__ import annotations

import argparse
import logging

# ---- cmta train -----------------------------------------------------------------


MODEL_NAMES = ("cmta", "snn", "snntrans", "meanmil", "maxmil", "attmil", "transmil", "dualtrans",
               "clam_sb", "clam_mb", "mcat", "mcat_omic", "porpoise", "m3if", "gpdbn", "hfbsurv",
               "coxnet")


log = logging.getLogger(__name__)


def _patch_cap(text: str) -> int:
    """--max-train-patches: a count >= 0, or none/null (= 0, whole bags)."""
    if text.lower() in ("none", "null"):
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of patches or none, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .settings import SELECTIONS, TrainSettings

    d = TrainSettings()
    p.add_argument("--cohort", required=True, help="output folder of `cmta cohort` (with folds.json)")
    p.add_argument("--fold", type=int, required=True, help="fold number k (folds/fold_k)")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="model to train")
    p.add_argument("--features-dir", help="patch-feature folder (needed by models that read slides)")
    p.add_argument("-o", "--outdir", required=True,
                   help="output folder: model.pt, epochs.tsv, predictions.tsv, summary.json")
    m = p.add_argument_group("model")
    m.add_argument("--size", choices=["small", "large"], default="small")
    m.add_argument("--fusion", choices=["concat", "bilinear"], default="concat")
    m.add_argument("--attention", choices=["nystrom", "exact"], default="nystrom",
                   help="Nystrom (published) or exact softmax attention (SDPA)")
    m.add_argument("--no-cross-attention", action="store_true", help="ablation: no cross-modal attention")
    m.add_argument("--no-alignment", action="store_true", help="ablation: no alignment loss")
    m.add_argument("--no-detach", action="store_true", help="ablation: no stop-gradient on p and g")
    m.add_argument("--no-ppeg", action="store_true", help="ablation: no PPEG")
    m.add_argument("--short-exact-attention", action="store_true",
                   help="departure: sequences shorter than the 128 landmarks take the converged "
                        "limit of the Nystrom formula (default: the published 6-iteration arithmetic)")
    t = p.add_argument_group("training (defaults: the published settings)")
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=d.optimizer)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--momentum", type=float, default=d.momentum)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--scheduler", choices=["none", "cosine"], default=d.scheduler)
    t.add_argument("--grad-accum", type=int, default=d.grad_accum, help="patients per optimiser step")
    t.add_argument("--alpha", type=float, default=d.alpha, help="weight of the alignment loss (CMTA)")
    t.add_argument("--similarity", choices=["l1", "mse", "kl", "cosine"], default=d.similarity)
    t.add_argument("--censor-weight", type=float, default=d.censor_weight,
                   help="NLL weight of the uncensored term alone (published alpha; default 0)")
    t.add_argument("--l1", type=float, default=d.l1,
                   help="L1 penalty on every weight, added to the loss before it is divided by "
                        "--grad-accum (recipe reference: MCAT's SNN 1e-4 x 32 = 3.2e-3; PORPOISE 1e-5 x 32 "
                        "on the genomic network and fusion only)")
    t.add_argument("--no-weighted-sampler", action="store_true",
                   help="shuffle patients instead of balancing (time bin x censorship) classes")
    t.add_argument("--max-train-patches", type=_patch_cap, default=d.max_train_patches,
                   help="departure: subsample larger bags at training (seeded); 0/none = whole bags "
                        "(default, published); evaluation always uses every patch")
    t.add_argument("--selection", choices=SELECTIONS, default=d.selection,
                   help="final (default) | early_stopping (on inner_val) | best_heldout "
                        "(published protocol, OPTIMISTIC: the reported fold picks the epoch)")
    t.add_argument("--monitor", choices=["loss", "cindex"], default=d.monitor)
    t.add_argument("--patience", type=int, default=d.patience)
    t.add_argument("--min-epochs", type=int, default=d.min_epochs)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--recipe", choices=["cmta", "reference"], default="cmta",
                   help="cmta (default): the options above; reference: a baseline's own authors' "
                        "optimisation (docs/models.md), replacing optimizer, lr, weight decay, "
                        "grad accumulation, epochs and L1")
    t.add_argument("--protocol", choices=["honest", "paper"], default="honest",
                   help="the config's protocol, recorded in summary.json (the report's sd ddof); "
                        "paper also trains in fp32 (no autocast), as the authors")
    t.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    t.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    t.add_argument("--cache-bags", action="store_true", help="keep all bags in memory")


def run(args: argparse.Namespace) -> int:
    if args.model == "coxnet":  # the linear floor: scikit-survival, no network
        return run_coxnet(args)
    import torch

    from .fold import run_fold
    from .recipes import apply_recipe
    from .settings import TrainSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TrainSettings(
        epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, scheduler=args.scheduler, grad_accum=args.grad_accum,
        alpha=args.alpha, similarity=args.similarity, censor_weight=args.censor_weight,
        l1=args.l1,
        weighted_sampler=not args.no_weighted_sampler, max_train_patches=args.max_train_patches,
        selection=args.selection, monitor=args.monitor, patience=args.patience,
        min_epochs=args.min_epochs, seed=args.seed, device=args.device,
        amp=not args.no_amp and args.protocol != "paper",  # the authors trained in fp32
    )
    settings, recipe = apply_recipe(args.model, args.recipe, settings)
    options = {}
    if args.model in ("cmta", "snntrans", "transmil", "dualtrans"):
        options["attention"] = args.attention
        # recorded even when False, so that a checkpoint rebuilds with the arithmetic it
        # was trained with whatever the default
        options["short_exact"] = bool(args.short_exact_attention)
    if args.model in ("cmta", "transmil", "dualtrans") and args.no_ppeg:
        options["ppeg"] = False
    if args.model == "cmta":
        options.update(cross_attention=not args.no_cross_attention,
                       alignment=not args.no_alignment, detach=not args.no_detach)
    summary = run_fold(
        args.cohort, args.fold, args.model, args.outdir, features_dir=args.features_dir,
        settings=settings, size=args.size, fusion=args.fusion, model_options=options,
        cache_bags=args.cache_bags, recipe=recipe, protocol=args.protocol,
    )
    tag = f" (OPTIMISTIC: {'; '.join(summary['optimistic_reasons'])})" if summary["optimistic"] else ""
    c = summary["metrics"].get("heldout_cindex")
    log.info("fold %d %s: held-out c-index %s at epoch %d%s -> %s", summary["fold"], summary["model"],
             "n/a" if c is None else f"{c:.4f}", summary["selected_epoch"], tag, args.outdir)
    return 0


def run_coxnet(args: argparse.Namespace) -> int:
    """`cmta train --model coxnet`: the elastic-net Cox floor (training/coxnet.py); the
    network options are accepted and unused, --seed seeds the inner folds."""
    from .coxnet import CoxnetSettings, run_coxnet_fold

    summary = run_coxnet_fold(args.cohort, args.fold, args.outdir, CoxnetSettings(seed=args.seed))
    c = summary["metrics"].get("heldout_cindex")
    log.info("fold %d coxnet: held-out c-index %s -> %s", summary["fold"], "n/a" if c is None else f"{c:.4f}",
             args.outdir)
    return 0


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "train": (add_arguments, run),
}
