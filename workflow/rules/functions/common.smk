# Functions of rules/common.smk (which includes this file first): this workflow's own source
# read through Snakemake's source cache, --config values to the schema's types, the package
# that plans and runs the jobs, the conda envs, retries and GPUs. Everything here works the
# same whether the workflow is a plain clone, a module from a local folder, or a module
# from git ("git+file:///repo/workflow/Snakefile@<commit>", github(..., tag=...)).


def source_text(path):
    """The text of a file of this workflow's own source (``path`` from the repository root),
    through Snakemake's source cache: a folder, a commit or a tag alike."""
    with workflow.sourcecache.open(SOURCE.join(path)) as f:
        text = f.read()
    return text.decode() if isinstance(text, bytes) else text


def source_version():
    return re.search(
        r'^__version__ = "([^"]+)"', source_text("cmta_pipeline/__init__.py"), re.M
    ).group(1)


def config_from_cli(value, schema):
    """The value the schema asks for, from a string of --config: Snakemake reads
    `--config gpu=false` as the string "false" (it converts only True/False, ints and
    floats; snakemake/cli.py parse_config) and the values of a dict given on the command
    line (`--config "training={'epochs': 2}"`) all as strings. A string the schema accepts
    as it is (a path, an enum value such as compile: "on") is kept."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: config_from_cli(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [config_from_cli(v, schema["items"]) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return bool(value) if "boolean" in types and value in (0, 1) else value
    if not isinstance(value, str) or value in schema.get("enum", []):
        return value
    word = value.strip().lower()
    if "boolean" in types and word in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[word]
    if "null" in types and word in ("null", "none", "~"):
        return None
    if "integer" in types and re.fullmatch(r"[+-]?\d+", word):
        return int(word)
    if "number" in types and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", word):
        return float(word)
    return value


BOOLEAN_WORDS = {
    **dict.fromkeys(("true", "yes", "on", "1"), True),
    **dict.fromkeys(("false", "no", "off", "0"), False),
}


def package_source():
    """(pip requirement, editable) of this workflow's own cmta_pipeline: a checkout is
    installed editable (an env runs that folder as it is now), a commit or a tag as a copy
    of exactly that commit or tag. A branch is refused: it names no one version."""
    if isinstance(SOURCE, LocalSourceFile):
        return SOURCE.get_path_or_uri(secret_free=False), True
    if isinstance(SOURCE, LocalGitFile):
        import git

        commit = git.Repo(SOURCE.repo_path).commit(SOURCE.ref).hexsha
        return f"git+file://{os.path.realpath(SOURCE.repo_path)}@{commit}", False
    if isinstance(SOURCE, HostingProviderFile):
        if SOURCE.branch is not None:
            raise WorkflowError(
                f"the module source {SOURCE} names a branch: give tag=... or commit=..., "
                "so that its conda envs (and results) are those of one version"
            )
        return f"git+https://{SOURCE.host}/{SOURCE.repo}@{SOURCE.ref}", False
    raise WorkflowError(f"cannot install cmta_pipeline from the module source {SOURCE}")


def pip_hint():
    package, editable = PACKAGE
    return f"pip install -e {package}" if editable else f"pip install '{package}'"


def write_if_changed(path, text):
    """Write ``text`` to ``path`` unless it holds it already (atomically: SLURM jobs read
    the workflow again and write the same bytes)."""
    path = Path(path)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)


def imported_modules(name, is_package, text):
    """The cmta_pipeline modules (or names) one module imports, absolute dotted names."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found += [target] + [f"{target}.{a.name}" for a in node.names]
    return [m for m in found if m.split(".")[0] == "cmta_pipeline"]


def planning_package():
    """The folder Snakemake imports cmta_pipeline from to plan: this workflow's own source.
    A checkout is that folder; a module from git has none, so the modules planning reads
    (torch-free: PLANNING_MODULES and what they import) are written from the source."""
    if isinstance(SOURCE, LocalSourceFile):
        return SOURCE.get_path_or_uri(secret_free=False)
    root, todo, seen = GENERATED / "python", list(PLANNING_MODULES), set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        if name in seen:
            continue
        seen.add(name)
        for rel, is_package in (
            (f"{os.path.join(*parts)}.py", False),
            (os.path.join(*parts, "__init__.py"), True),
        ):
            try:
                text = source_text(rel)
            except Exception:  # not a module of the source (a function's name): go on
                continue
            write_if_changed(root / rel, text)
            todo += imported_modules(name, is_package, text)
            break
    return str(root)


def check_job_package():
    """Without --use-conda the jobs run `python -m cmta_pipeline` with the Python that runs
    Snakemake: it must have this workflow's own package installed: the same version and
    the same files (that very checkout, or a copy of its files or of the git source's
    commit: compared by content, package_digest). Read without importing it (planning
    imports the source's). Commands that run no job (-n, --lint, --summary, --dag, --list-rules, ...)
    need no package: they plan with the source's own modules."""
    if runs_no_job():
        return
    spec = importlib.util.find_spec("cmta_pipeline")
    if spec is None or spec.origin is None:
        raise WorkflowError(
            f"cmta_pipeline is not installed in the Python that runs Snakemake "
            f"({sys.executable}), which runs the jobs without --use-conda: {pip_hint()}"
        )
    init = Path(spec.origin).resolve()
    found = re.search(r'^__version__ = "([^"]+)"', init.read_text(), re.M).group(1)
    root = init.parents[1]
    package, editable = PACKAGE
    installed = f"{root}, version {found}"
    wrong = found != VERSION
    if not wrong and (not editable or root != Path(package)):
        # another folder than the checkout, or a git source: the installed files must be
        # the source's (a copy pip made of that commit, or a checkout holding the same)
        expected = package_digest(package) if editable else source_digest()
        if expected is not None:
            wrong = package_digest(root) != expected
            installed += ", other files than the source's" if wrong else ""
    if wrong:
        raise WorkflowError(
            f"the cmta_pipeline installed in the Python that runs Snakemake ({installed}) "
            f"is not this workflow's ({package}, version {VERSION}): {pip_hint()} "
            "there, or run with --use-conda"
        )


def runs_no_job():
    """Whether the command line asks for no job to run: a dry run or a planning command."""
    frame = sys._getframe()
    while frame is not None and frame.f_code.co_name != "args_to_api":
        frame = frame.f_back
    args = frame.f_locals.get("args") if frame is not None else None
    return args is not None and (
        bool(getattr(args, "dryrun", False))
        or any(getattr(args, a, None) for a in NO_JOB_COMMANDS)
    )


def package_digest(root):
    """sha256 over the cmta_pipeline/**/*.py files under ``root`` (path and content)."""
    h = hashlib.sha256()
    base = Path(root, "cmta_pipeline")
    files = {f.relative_to(root).as_posix(): f for f in base.rglob("*.py")}
    for rel in sorted(files):
        if "__pycache__" not in rel:
            h.update(b"\0".join([rel.encode(), files[rel].read_bytes()]))
    return h.hexdigest()


def source_digest():
    """package_digest of a git source's commit (a local clone's); None for a hosted source,
    which is compared by version only."""
    if not isinstance(SOURCE, LocalGitFile):
        return None
    import git

    tree = git.Repo(SOURCE.repo_path).commit(SOURCE.ref).tree / "cmta_pipeline"
    blobs = [b for b in tree.traverse() if b.type == "blob" and b.path.endswith(".py")]
    h = hashlib.sha256()
    for b in sorted(blobs, key=lambda b: b.path):
        h.update(b"\0".join([b.path.encode(), b.data_stream.read()]))
    return h.hexdigest()


def env_file(name):
    """The conda env of workflow/envs/<name>.yaml, with the post-deploy script that installs
    this workflow's own cmta_pipeline into it. Snakemake names an env by the hash of its
    conda prefix, yaml and post-deploy script (snakemake/deployment/conda.py,
    Env._get_hash), not by where the yaml lies; so both are written into
    .snakemake/cmta/<version>-<source>/envs/ with the script naming what it installs (this
    checkout's folder, or the commit or tag): another source, other envs, and an env shared
    through --conda-prefix always runs the code of the workflow that uses it."""
    yaml_file = GENERATED / "envs" / f"{name}.yaml"
    if name not in ENV_FILES:
        package, editable = PACKAGE
        shebang, body = source_text("workflow/envs/install-cmta-pipeline.sh").split(
            "\n", 1
        )
        write_if_changed(yaml_file, source_text(f"workflow/envs/{name}.yaml"))
        write_if_changed(
            yaml_file.with_name(f"{name}.post-deploy.sh"),
            f"{shebang}\n# Written by workflow/rules/common.smk: cmta-pipeline {VERSION}\n"
            f"CMTA_PACKAGE={shlex.quote(package)}\n"
            f"CMTA_EDITABLE={int(editable)}\nCMTA_VERSION={VERSION}\n{body}",
        )
        ENV_FILES.add(name)
    return str(yaml_file)


ENV_FILES = set()


def scaled_mem(mem_mb):
    """mem_mb that grows with each retry (the SLURM profile sets retries: 1), within the
    run's ceiling (--resources mem_mb=N, as profiles/slurm sets it to the partitions'
    max_mem_mb): Snakemake gives each job min(this, N) (snakemake/rules.py,
    Rule.expand_resources)."""
    return lambda wildcards, attempt: int(mem_mb) * attempt


def scaled_runtime(minutes):
    """runtime (minutes) that grows with each retry, so that a job SLURM ended for its time
    limit (TIMEOUT) is resubmitted with a longer one; capped like scaled_mem."""
    return lambda wildcards, attempt: int(minutes) * attempt


def resolve_gpu(value):
    """config gpu: true or false as given; auto: for a local run, whether the host that plans
    it has an NVIDIA GPU; under a cluster executor, whether the profile's partitions file
    (slurm-partition-config) has a partition with GPUs, and without one planning stops
    (the snakemake host tells nothing about the compute nodes). A cluster job reads the
    workflow again on its node, which may differ: it takes the planner's answer, exported
    to the jobs (sbatch --export=ALL). The answer is printed once per run."""
    if value != "auto":
        return value
    planned = os.environ.get("CMTA_GPU")
    if workflow.remote_exec:  # a cluster job: the planner's answer (else this node's)
        return planned == "1" if planned in ("0", "1") else host_gpus() > 0
    executor, partitions = planned_executor()
    if executor in LOCAL_EXECUTORS:
        n = host_gpus()
        found, why = n > 0, f"{n} NVIDIA GPU(s) on this host"
    elif partitions:
        gpu_parts = gpu_partitions(partitions)
        found = bool(gpu_parts)
        has = ", ".join(gpu_parts) or "none with max_gpu >= 1"
        why = f"executor {executor}, {partitions}: GPU partitions {has}"
    else:
        raise WorkflowError(
            f"gpu: auto cannot tell whether the nodes of executor {executor} have GPUs (no "
            "slurm-partition-config partitions file): the encoder jobs (encode, "
            "encode_batch_<k>) and the training of the models that read slides (train) "
            "would run without a GPU; choose with --config gpu=true (GPU nodes) or "
            "--config gpu=false (CPU only)"
        )
    os.environ.update(CMTA_GPU=str(int(found)))
    cpu = (
        ""
        if found
        else ": extraction and training run on the CPU, no job asks for a GPU"
    )
    warn_once(f"gpu: auto -> {str(found).lower()} ({why}){cpu}")
    return found


#: executors that run the jobs on the host that plans them (or run none)
LOCAL_EXECUTORS = {None, "local", "dryrun", "touch"}


def planned_executor():
    """(executor, partitions file) of the run the command line asks for: found in
    Snakemake's cli.args_to_api, which reads the workflow before it hands the executor over.
    (None, None) for commands that run no job (--lint, --list-rules, --summary, --dag, ...)
    and where Snakemake is used through its API."""
    frame = sys._getframe()
    while frame is not None and frame.f_code.co_name != "args_to_api":
        frame = frame.f_back
    args = frame.f_locals.get("args") if frame is not None else None
    if args is None or any(getattr(args, a, None) for a in NO_JOB_COMMANDS):
        return None, None
    partitions = getattr(args, "slurm_partition_config", None)
    # unset: None or a dataclass MISSING
    if not isinstance(partitions, (str, os.PathLike)):
        partitions = None
    return getattr(args, "executor", None), (str(partitions) if partitions else None)


#: Snakemake options (argparse dests) under which no job runs
NO_JOB_COMMANDS = (
    "lint list_rules list_target_rules list_resources dag rulegraph filegraph d3dag "
    "summary detailed_summary report unlock cleanup_metadata list_changes "
    "list_input_changes list_params_changes list_untracked delete_all_output "
    "delete_temp_output print_compilation containerize generate_unit_tests export_cwl "
    "archive"
).split()


def gpu_partitions(path):
    """Names of the partitions with GPUs (max_gpu >= 1) in a slurm-partition-config file."""
    try:
        parts = (yaml.safe_load(Path(path).read_text()) or {}).get("partitions") or {}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise WorkflowError(f"{path}: cannot read the partitions: {exc}") from exc
    return [str(n) for n, p in parts.items() if int((p or {}).get("max_gpu") or 0) >= 1]


def host_gpus():
    """NVIDIA GPUs of the host that runs snakemake: those CUDA_VISIBLE_DEVICES lists when it
    is set (empty or -1: none), else the /dev/nvidia<N> device nodes (no nvidia-smi needed).
    gpu: auto and the local one-job-per-GPU limit (rules/features.smk) both count this way.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(list(Path(os.sep, "dev").glob("nvidia[0-9]*")))


def gpus_for(device):
    """GPUs a job asks the cluster for: one unless this run has none (config gpu) or the
    stage is set to run on the CPU."""
    return int(GPU and device != "cpu")


def gpu_model_for(gpus):
    """The GPU model a job that asks for a GPU names (config gpu_model: sbatch
    --gpus=<model>:1); "" for the others (a model alone would make the SLURM plugin ask
    for a GPU)."""
    return (config["gpu_model"] or "") if gpus else ""


# Messages printed already, shared by every cohort's module (each reads this file again):
# kept on the workflow object, which the modules share.
_WARNED = workflow.__dict__.setdefault("_cmta_planning_messages", set())


def warn_once(message):
    """Print a planning message once, however often the DAG asks the function again."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(message, file=sys.stderr)


def slide_table(cfg):
    """The slides of one cohort's config: the demo's, a sheet or folder, or none (a
    genomics-only cohort)."""
    if cfg.get("demo"):
        # The demo cohort's slides are written by rules/demo.smk; their names are known before.
        from cmta_pipeline.demo.settings import DemoSettings, slide_sheet

        table = slide_sheet(DemoSettings.from_config(cfg["demo"]), cfg["demo"]["dir"])
    elif cfg["slides"]["sheet"] or cfg["slides"]["folder"]:
        s = cfg["slides"]
        table = load_slide_table(
            sheet=s["sheet"],
            folder=s["folder"],
            recursive=s["recursive"],
            gdc_sample_sheet=s["gdc_sample_sheet"],
            gdc_manifest=s["gdc_manifest"],
        )
    else:  # a genomics-only cohort
        table = pd.DataFrame(columns=["slide_id", "case_id", "path", "mpp", "stain"])
    validate(table, schema="../schemas/slides.schema.yaml")
    if table.empty and not cfg.get("parent_outdir"):
        warn_once(
            "slides: no slides; set slides.sheet or slides.folder in the config to use "
            "slides (README: 'Your data')"
        )
    return table.set_index("slide_id", drop=False)


#: folders of <outdir> that a run of several cohorts keeps for itself
RESERVED_COHORT_NAMES = {
    "tiles",
    "features",
    "logs",
    "benchmarks",
    "cache",
    "resources",
    "external",
}


def check_cohort_names(cfg):
    """Each cohort name names the folder <outdir>/<name> and the rules <name>_<rule>:
    letters, digits and _, starting with a letter, and none of <outdir>'s own folders.
    Checked before the schema, for a clearer message than its pattern's."""
    cohorts = cfg.get("cohorts")
    for name in cohorts if isinstance(cohorts, dict) else {}:
        name = str(name)
        if (
            not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)
            or name in RESERVED_COHORT_NAMES
        ):
            raise WorkflowError(
                f"config cohorts: {name!r} is not a usable cohort name: it names the folder "
                f"<outdir>/{name} and its rules; use letters, digits and _ (starting with a "
                f"letter), not {', '.join(sorted(RESERVED_COHORT_NAMES))}"
            )
    if isinstance(cohorts, dict) and cohorts:
        check_cohort_rule_names([str(n) for n in cohorts])


def check_cohort_rule_names(names):
    """Each cohort's rules are named <name>_<rule>: no two may make the same name (blca's
    rule predict_genomics and blca_predict's rule genomics), nor a rule of the run's own.
    """
    plain, patterns = workflow_rule_names()
    made = {}
    for name in names:
        for own in sorted(plain):
            new = f"{name}_{own}"
            if new in made:
                raise WorkflowError(
                    f"config cohorts: {made[new][0]!r} and {name!r} both make the rule name "
                    f"{new} (rule {made[new][1]} of {made[new][0]!r}, rule {own} of "
                    f"{name!r}): rename one of the two cohorts"
                )
            made[new] = (name, own)
            if any(re.fullmatch(p, new) for p in patterns):
                raise WorkflowError(
                    f"config cohorts: {name!r} makes the rule name {new} (its rule {own}), "
                    "which the run itself has: rename the cohort"
                )


def workflow_rule_names():
    """(names, patterns) of the rules this workflow's own files define, read from its
    source (rule and checkpoint definitions), and the regular expressions of the rules
    named in a loop (name: f"encode_batch_{batch}")."""
    snakefile = source_text("workflow/Snakefile")
    included = re.findall(r'^\s*include:\s*"(rules/[^"]+)"', snakefile, re.M)
    files = ["workflow/Snakefile", *(f"workflow/{f}" for f in included)]
    names, patterns = set(), set()
    for f in files:
        text = source_text(f)
        found = re.findall(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", text, re.M)
        names.update(found)
        patterns.update(map(re.escape, found))
        for named in re.findall(r'^\s*name:\s*f?"([^"]+)"', text, re.M):
            patterns.add(re.sub(r"\\\{[^}]*\\\}", r"\\w+", re.escape(named)))
    return names, patterns


def cohort_configs(cfg):
    """config cohorts: name -> that cohort's full config: the top-level one with the
    cohort's slides, genomics, cohort and study merged over it, outdir <outdir>/<name> and
    parent_outdir <outdir>. {} for a run of one cohort (no cohorts:)."""
    cohorts = cfg.get("cohorts") or {}
    if cohorts and cfg.get("demo"):
        raise WorkflowError("config: demo and cohorts cannot be combined; drop one")
    if cohorts and cfg.get("parent_outdir"):
        raise WorkflowError(
            "config: cohorts inside a cohort (parent_outdir set): drop one"
        )
    check_cohort_names(cfg)
    out = {}
    for name, part in cohorts.items():
        c = {k: v for k, v in cfg.items() if k not in ("cohorts", "external")}
        for section in ("slides", "genomics", "cohort"):
            c[section] = {**cfg[section], **(part or {}).get(section, {})}
        if "study" in (part or {}):
            c["study"] = part["study"]
        c["outdir"] = f"{cfg['outdir'].rstrip('/')}/{name}"
        c["parent_outdir"] = cfg["outdir"].rstrip("/")
        out[name] = c
    return out


def union_slide_table(tables):
    """The slides of every cohort, each once; a slide id that two cohorts give with
    different files is an error naming both."""
    seen = {}
    for name, table in tables.items():
        for sid, path in zip(table["slide_id"], table["path"]):
            where = os.path.realpath(str(path))
            if sid in seen and seen[sid][1] != where:
                raise WorkflowError(
                    f"config cohorts: slide {sid!r} is {seen[sid][1]} in cohort "
                    f"{seen[sid][0]!r} but {where} in cohort {name!r}: one slide id, one file"
                )
            seen.setdefault(sid, (name, where))
    frames = [t for t in tables.values() if len(t)]
    if not frames:
        return next(iter(tables.values()))
    union = pd.concat(frames, ignore_index=True).drop_duplicates("slide_id")
    return union.set_index("slide_id", drop=False)


def config_encoders(cfg):
    """The run's encoders, in order: features.encoders when set, else [features.encoder]
    (one encoder: today's run, paths and names). Each is tiled, encoded and trained on
    once; the first one's runs keep their names (train/<run>/), the others' are
    <run>@<encoder> (docs/features.md, "Several encoders in one run")."""
    from cmta_pipeline.features.encoders.registry import DEFAULT_ENCODER

    f = cfg["features"]
    listed = list(f.get("encoders") or [])
    if not listed:
        return [f["encoder"]]
    twice = [e for e in listed if listed.count(e) > 1]
    if twice:
        raise WorkflowError(f"features.encoders: {twice[0]!r} is listed twice")
    if f["encoder"] not in (DEFAULT_ENCODER, listed[0]):
        raise WorkflowError(
            f"features.encoder ({f['encoder']}) and features.encoders ({', '.join(listed)}) "
            "disagree: give features.encoders alone"
        )
    if len(listed) > 1 and f["weights"] not in ("imagenet", "hub", "random"):
        raise WorkflowError(
            f"features.weights: {f['weights']} is one encoder's file; with several "
            "features.encoders use imagenet (each one's published weights) or random"
        )
    return listed


def encoder_runs(runs, encoders):
    """``runs`` (the first encoder's, named as today) and, for each further encoder, the
    runs of models that read slides as <run>@<encoder>; genomics-only runs train once.
    """
    from cmta_pipeline.modalities import reads_slides

    extra = [
        f"{r}@{e}" for e in encoders[1:] for r in runs if reads_slides(r.split("-")[0])
    ]
    return list(runs) + extra


def alternatives(values):
    """A wildcard constraint matching exactly one of ``values`` ("" included)."""
    return "(?:" + "|".join(map(re.escape, dict.fromkeys(values))) + ")"


def encoder_layout(config, out, encoder=None):
    """(encoder, tiles folder, features folder, tiling settings) of ``encoder`` (default:
    features.encoder).

    resnet50 takes any patch size: the tiling as configured, tiles/ and features/. Another
    encoder was trained on patches of one field of view shown at one input size (its
    registry entry): patch_size_px becomes that field of view at tiling.target_mpp and
    encoder_input_px its input; when that is the configured geometry (UNI: 128 um at 224
    px, as resnet50's default) it shares tiles/, else tiles_<geometry>/.
    """
    from cmta_pipeline.features.encoders.registry import get_spec

    try:
        spec = get_spec(encoder or config["features"]["encoder"])
    except Exception as exc:
        key = (
            "features.encoders"
            if config["features"].get("encoders")
            else "features.encoder"
        )
        raise WorkflowError(f"{key}: {exc}") from exc
    # the tiling settings the tile jobs get (slides_per_job: how they are cut into jobs)
    tiling = {k: v for k, v in config["tiling"].items() if k != "slides_per_job"}
    if spec.family == "resnet":
        return spec.name, f"{out}/tiles", f"{out}/features", tiling
    mpp = float(tiling["target_mpp"])
    own = {
        "patch_size_px": int(round(spec.fov_um / mpp)),
        "encoder_input_px": spec.read_px,
    }
    same = all(tiling[k] == v for k, v in own.items())
    tiles = f"{out}/tiles" if same else f"{out}/tiles_{spec.geometry()}"
    return spec.name, tiles, f"{out}/features/{spec.name}", {**tiling, **own}
