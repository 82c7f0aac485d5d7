# Input and argument functions of the report stage's rules (rules/report.smk, which
# includes this file); they read the config of rules/common.smk. Table 1 of a run of
# several cohorts reads what each cohort's module trains (its rule <name>_all).
from cmta_pipeline.modalities import LINEAR_MODELS, reads_slides
from cmta_pipeline.report.protocol import study_of

TABLE1 = config["table1"]
if config.get("external") and not COHORTS:
    raise WorkflowError(
        "config external: needs cohorts: (the train and test cohorts are named there)"
    )


def table1_targets():
    """<outdir>/table1.md for a run of one cohort that trains, or of several; a cohort's
    part of a run of several (parent_outdir set) has none: the run's table holds it."""
    if config["parent_outdir"]:
        return []
    if COHORTS or train_targets():
        return [f"{OUT}/table1.md"]
    return []


def table1_runs():
    """Runs of the table: training.models, the ablations and the floor (a run a cohort
    does not train, such as a slide model of a genomics-only cohort, is left out there),
    then the slide models' runs of each further encoder (<run>@<encoder>).
    """
    t = config["training"]
    runs = list(t["models"]) + [f"cmta-{a}" for a in t["ablations"]]
    floor = TABLE1["floor"]
    return encoder_runs(
        runs + ([floor] if floor and floor not in runs else []), ENCODERS
    )


def table1_cohorts():
    """(name, folder, study) of each cohort of the table."""
    if COHORTS:
        return [(n, f"{OUT}/{n}", study_of(c)) for n, c in COHORTS.items()]
    study = study_of(config)
    return [(study or "cohort", OUT, study)]


def table1_input(wildcards):
    """The summary.json of every run and fold the table reads (written after the
    predictions), and the external.json of every external pair and run."""
    if not COHORTS:
        return train_targets() + floor_targets()
    files = external_targets()
    for name in COHORTS:
        train = os.path.join(OUT, name, "train")
        files += [
            f
            for f in getattr(rules, f"{name}_all").input
            if f.startswith(train) and os.path.basename(f) == "summary.json"
        ]
    return files


def paper_table_file():
    """The paper's Table 1 values (resources/paper_table1.tsv of this workflow's source),
    written where this source writes its generated files."""
    path = GENERATED / "paper_table1.tsv"
    write_if_changed(path, source_text("resources/paper_table1.tsv"))
    return str(path)


def table1_args(wildcards):
    cohorts = table1_cohorts()
    args = [" ".join(shlex.quote(f"{n}={d}") for n, d, _ in cohorts)]
    studies = [f"{n}={s}" for n, _, s in cohorts if s]
    if studies:
        args.append("--study " + " ".join(map(shlex.quote, studies)))
    if external_pairs():
        args.append(f"--external-dir {shlex.quote(f'{OUT}/external')}")
    args += [
        f"--protocol {config['protocol']}",
        "--runs " + " ".join(table1_runs()),
        f"--n-boot {TABLE1['n_boot']} --seed {TABLE1['seed']}",
    ]
    return " ".join(args)


# ---- external validation (config external:, rule external) ---------------------------


def external_pairs():
    """``<train>_to_<test>`` -> (train, test) of config ``external:`` (cohort names of
    ``cohorts:``; a run of several cohorts only)."""
    pairs = {}
    for i, pair in enumerate(config.get("external") or []):
        for key in ("train", "test"):
            if pair[key] not in COHORTS:
                raise WorkflowError(
                    f"config external[{i}].{key}: {pair[key]!r} is not a cohort of cohorts: "
                    f"({', '.join(COHORTS) or 'none: external needs cohorts:'})"
                )
        pairs[f"{pair['train']}_to_{pair['test']}"] = (pair["train"], pair["test"])
    return pairs


def cohort_run_folds(name):
    """run -> the fold folders cohort ``name`` trains (its rule <name>_all)."""
    train = os.path.join(OUT, name, "train")
    runs = {}
    for f in getattr(rules, f"{name}_all").input:
        if f.startswith(train) and os.path.basename(f) == "summary.json":
            fold_dir = os.path.dirname(f)
            runs.setdefault(os.path.basename(os.path.dirname(fold_dir)), []).append(
                fold_dir
            )
    return runs


def external_runs(train):
    """The table's runs that cohort ``train`` trains, less linear ones (no fold network)."""
    trained = cohort_run_folds(train)
    return [
        r
        for r in table1_runs()
        if r in trained and r.split("-")[0] not in LINEAR_MODELS
    ]


def external_targets():
    return [
        f"{OUT}/external/{pair}/{run}/external.json"
        for pair, (train, _) in external_pairs().items()
        for run in external_runs(train)
    ]


def external_input(wildcards):
    train, test = external_pairs()[wildcards.pair]
    folds = cohort_run_folds(train)[wildcards.run]
    files = {
        "models": [f"{d}/model.pt" for d in folds],
        "summaries": [f"{d}/summary.json" for d in folds],
        "train_cohort": f"{OUT}/{train}/cohort/folds.json",
        "test_cohort": f"{OUT}/{test}/cohort/folds.json",
        "test_genomics": f"{OUT}/{test}/genomics/families.tsv",
    }
    if reads_slides(wildcards.run.split("-")[0]):
        files["tiles"] = f"{OUT}/{test}/{os.path.basename(TILES)}/summary.tsv"
        files["features"] = feature_targets()
    return files


def external_args(wildcards, input):
    train, test = external_pairs()[wildcards.pair]
    args = [
        f"--run-dir {shlex.quote(os.path.dirname(os.path.dirname(input.models[0])))}",
        f"--cohort {shlex.quote(os.path.dirname(input.train_cohort))}",
        f"--test-cohort {shlex.quote(os.path.dirname(input.test_cohort))}",
        f"--genomics {shlex.quote(os.path.dirname(input.test_genomics))}",
        f"--train-name {train} --test-name {test}",
        f"--n-boot {TABLE1['n_boot']} --seed {TABLE1['seed']}",
    ]
    if "tiles" in input.keys():
        args.append(f"--tiles-summary {shlex.quote(input.tiles)}")
        args.append(f"--features-dir {shlex.quote(FEATURES_OUT)}")
    return " ".join(args)
