# Input and argument functions of the report stage's rules (rules/report.smk, which
# includes this file); they read the config of rules/common.smk. Table 1 of a run of
# several cohorts reads what each cohort's module trains (its rule <name>_all).
from cmta_pipeline.report.protocol import study_of

TABLE1 = config["table1"]


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
    predictions)."""
    if not COHORTS:
        return train_targets() + floor_targets()
    files = []
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
    args += [
        f"--protocol {config['protocol']}",
        "--runs " + " ".join(table1_runs()),
        f"--n-boot {TABLE1['n_boot']} --seed {TABLE1['seed']}",
    ]
    return " ".join(args)
