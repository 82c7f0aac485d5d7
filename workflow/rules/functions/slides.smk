# Input and argument functions of the slides stage's rules (rules/slides.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.


def slide_input(wildcards):
    """The demo's slide, which demo_cohort writes. Other slides are no input file (Snakemake
    reruns a job whose input files lie elsewhere, and moving a slide folder would rerun
    everything); the tile job records which file it read instead (slide_file)."""
    return [SLIDES.loc[wildcards.slide, "path"]] if config.get("demo") else []


def slide_path(wildcards, input):
    """The slide's path for `cmta tile`; taking ``input`` keeps it out of the params that
    Snakemake records (where the file lies is no setting of the results)."""
    return SLIDES.loc[wildcards.slide, "path"]


def slide_file(wildcards):
    """What identifies the slide file the tiling reads (recorded, so a changed file reruns
    the tiling): its name, size and modification time, which moving the folder keeps (mv,
    cp -p, rsync -a). A missing file is tiled as failed, and tiled again once it exists.
    """
    path = Path(SLIDES.loc[wildcards.slide, "path"])
    if config.get("demo"):
        return path.name  # an input file (demo_cohort's): Snakemake tracks it
    try:
        st = path.stat()
    except OSError:
        return f"{path.name}: missing"
    return f"{path.name}: {st.st_size} bytes, modified {int(st.st_mtime)}"


def slide_options(slide):
    """What the sheet tells `cmta tile` about a slide (its mpp only where given)."""
    row = SLIDES.loc[slide]
    options = {"slide_id": slide, "case_id": str(row.case_id), "stain": row.stain}
    if row.mpp == row.mpp:  # not NaN
        options["mpp"] = row.mpp
    return options


def tile_args(wildcards):
    return " ".join(
        f"--{key.replace('_', '-')} {shlex.quote(str(value))}"
        for key, value in slide_options(wildcards.slide).items()
    )


def tile_folder():
    """A slide's tiles folder: <slide>.coords.h5 (read by the encoder jobs), <slide>.qc.png
    and its small JPEG, <slide>.qc.jpg, which the Snakemake report embeds (the PNGs would
    make it huge)."""
    return report(
        directory(f"{TILES_WC}/{{slide}}"),
        patterns=["{slide}.qc.jpg"],
        caption="../report/slide_qc.rst",
        category="Slides",
        subcategory="{slide}",
        labels={"slide": "{slide}", "figure": "tissue and patches"},
    )


def tiled_slides(encoder=None):
    """Slide ids tiled successfully for ``encoder`` (default: the first; evaluated once the
    checkpoint tile_summary of its tiling has run)."""
    geometry = GEOMETRY[encoder or ENCODER]
    summary = pd.read_csv(
        checkpoints.tile_summary.get(geometry=geometry).output.summary,
        sep="\t",
        dtype={"slide_id": str},
    )
    return summary.loc[summary["status"] == "ok", "slide_id"].tolist()


def tile_status_files(wildcards):
    """Every slide's tiling status in the tiling {geometry} (the run's, SHARED)."""
    return expand(
        f"{SHARED}/tiles{wildcards.geometry}/{{slide}}.tile.json", slide=SLIDES.index
    )


def tile_summaries():
    """This cohort's tiling summary of each encoder's tiling (one per geometry)."""
    return [f"{OUT}/tiles{g}/summary.tsv" for g in dict.fromkeys(GEOMETRY.values())]


# Tiling settings that change only the QC picture (cmta_pipeline/slides/pictures.py's
# PICTURE_KEYS): left out of the tile jobs' recorded settings, followed by qc_pictures.
PICTURE_KEYS = ("qc_max_px",)


def tile_settings(wildcards, input):
    """Every tiling setting, the picture's size included, for `cmta tile`; taking
    ``input`` keeps it out of the params that Snakemake records (tile_result_settings).
    """
    return json.dumps(TILINGS[wildcards.geometry])


def tile_result_settings(wildcards):
    """The tiling settings that change the tiles (recorded: changing one retiles); for a
    config without picture settings the same text as tile_settings, recorded before."""
    settings = TILINGS[wildcards.geometry]
    return json.dumps({k: v for k, v in settings.items() if k not in PICTURE_KEYS})


def picture_args(wildcards):
    """The picture settings of the tiling {geometry} for `cmta tile-qc` (recorded)."""
    size = TILINGS[wildcards.geometry].get("qc_max_px")
    return "" if size is None else f"--qc-max-px {int(size)}"


def picture_targets():
    """Each tiling's table of QC pictures (the run's: only where it tiles)."""
    if not OWNS_SLIDES:
        return []
    return [
        f"{SHARED}/tiles{g}/qc_pictures.tsv" for g in dict.fromkeys(GEOMETRY.values())
    ]


def jump_hash(key, buckets):
    """Jump consistent hash (Lamping & Veach 2014, arXiv:1406.2294): the bucket of ``key``
    among ``buckets``; with one bucket more, only 1/buckets of the keys move."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) % 2**64
        j = int((b + 1) * (2**31 / ((key >> 33) + 1)))
    return b


def slide_batches(n):
    """Slide ids in ceil(N / n) batches of about n: each slide's batch is a consistent hash
    of its id (in id order within a batch), so that adding or removing a slide changes its
    own batch, not every later one (the encoder jobs' and the tile jobs' batches)."""
    ids = sorted(SLIDES.index)
    buckets = max(1, -(-len(ids) // n))
    batches = [[] for _ in range(buckets)]
    for s in ids:
        key = int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big")
        batches[jump_hash(key, buckets)].append(s)
    return [b for b in batches if b]


# tiling.slides_per_job > 1: tile_batch_<k> jobs tile about that many slides each (one
# process) into TILES_WC/.staged/ (temporary; a slide id never starts with "."), and the
# local rule tile moves each slide's files into place, recording the tiling's settings.
TILE_SLIDES_PER_JOB = config["tiling"].get("slides_per_job", 1)
STAGED = f"{TILES_WC}/.staged"


def staged(ids, suffix=""):
    """The batch job's temporary outputs of the slides ``ids`` (folders when no suffix)."""
    if suffix:
        return [temp(f"{STAGED}/{s}{suffix}") for s in ids]
    return [temp(directory(f"{STAGED}/{s}")) for s in ids]


def tile_batch_input(ids):
    """The demo's slide files of the batch (see slide_input)."""
    return [SLIDES.loc[s, "path"] for s in ids] if config.get("demo") else []


def tile_batch_args(ids):
    """`cmta tile`'s --batch options, one per slide (what tile_args and the sheet give a
    tile job): written into the staging folder, the status naming the slide's own folder.
    Taking ``input`` keeps it out of the recorded params (rule tile records the settings).
    """

    def args(wildcards, input):
        words, tiles = [], TILES_WC.replace("{geometry}", wildcards.geometry)
        for s in ids:
            item = {"slide": str(SLIDES.loc[s, "path"]), **slide_options(s)}
            item.update(
                outdir=f"{tiles}/.staged/{s}",
                status=f"{tiles}/.staged/{s}.tile.json",
                publish_dir=f"{tiles}/{s}",
            )
            words += ["--batch", json.dumps(item)]
        return " ".join(map(shlex.quote, words))

    return args
