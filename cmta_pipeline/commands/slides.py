"""``cmta slides``: build a slide sheet from a folder (TCGA barcodes), or check a sheet."""

from __future__ import annotations

from ..fileio import atomic_output

HELP = "build or check a slide sheet (slide_id, case_id, path, mpp, stain) from a folder"


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="folder of slides named by TCGA barcode")
    src.add_argument("--sheet", help="an existing sheet to check")
    p.add_argument("--recursive", action="store_true", help="also look in sub-folders")
    p.add_argument("-o", "--output", help="write the sheet here (TSV); default: print it")


def run(args) -> int:
    from ..slides import load_slide_table

    table = load_slide_table(sheet=args.sheet, folder=args.folder, recursive=args.recursive)
    if args.output:
        with atomic_output(args.output) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
        print(f"{len(table)} slides of {table['case_id'].nunique()} patients -> {args.output}")
    else:
        print(table.to_csv(sep="\t", index=False), end="")
    return 0
