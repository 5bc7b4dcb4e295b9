"""Build tests/data/prompt-sample/: a small, fixed sample of the prompt sets under ../shared/data/prompts.

    python tests/data/make_prompt_sample.py [--shared PATH]

The full sets (about 7 MB, public, each with its licence in its SOURCES.md) stay outside the repository;
benches and the full training run read them from `--shared` / $GENGUARD_SHARED. Tests need only a few
rows of each file, in the same layout, so that `train_prompt_classifier.py --quick --shared
tests/data/prompt-sample` runs on a fresh clone. Rows are taken at a fixed stride (every file in name
order, header kept, rows unchanged); the relabel file keeps exactly the I2P rows sampled. Each folder's
SOURCES.md is copied with a note saying which rows were kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "prompt-sample" / "data" / "prompts"
REPO = HERE.parents[1]

# file (relative to data/prompts) -> rows kept
SIZES = {
    "coco30k_captions/coco_30k.csv": 120,
    "partiprompts/PartiPrompts.tsv": 60,
    "i2p/i2p_unsafe-prompts4703.csv": 160,
    "nsfw_erasure_bench/adv_prompts/Horror_adv_prompts.csv": 12,
    "nsfw_erasure_bench/adv_prompts/Nudity_adv_prompts.csv": 12,
    "nsfw_erasure_bench/adv_prompts/Violent_adv_prompts.csv": 12,
    "ringabell_pairs/NoNudity_prompt.csv": 10,
    "ringabell_pairs/Nudity_prompt.csv": 10,
    "ringabell_pairs/Violence_30.csv": 10,
    "uce_bias_prompts/profession_prompts.csv": 40,
    "uce_bias_prompts/race_prompts.csv": 10,
    "uce_bias_prompts/adjective_prompts.csv": 10,
}
ESD_ROWS = 8  # per file of esd_artist_style_prompts/
DALLEVAL_ITEMS = 25
RELABEL = "nsfw_erasure_bench/NSFWErasureBench_I2P_rows_only.csv"


def _stride(rows: list[list[str]], size: int) -> list[list[str]]:
    step = max(1, len(rows) // size)
    return rows[::step][:size]


def _copy_rows(source: Path, target: Path, size: int) -> list[list[str]]:
    delimiter = "\t" if source.suffix == ".tsv" else ","
    with source.open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle, delimiter=delimiter))
    kept = _stride(rows, size)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(kept)
    return [header, *kept]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("GENGUARD_SHARED") or str(REPO.parent / "shared")
    parser.add_argument("--shared", type=Path, default=Path(default))
    args = parser.parse_args()
    source = args.shared / "data" / "prompts"
    if not source.is_dir():
        raise SystemExit(f"--shared: expected a folder holding data/prompts, found none at {source}")
    if OUT.exists():
        shutil.rmtree(OUT)
    notes: dict[str, list[str]] = {}
    for name, size in SIZES.items():
        _copy_rows(source / name, OUT / name, size)
        notes.setdefault(name.split("/")[0], []).append(f"{name}: {size} rows at a fixed stride")
    i2p = _copy_rows(source / "i2p/i2p_unsafe-prompts4703.csv", OUT / "i2p/i2p_unsafe-prompts4703.csv", 160)
    cases = {row[i2p[0].index("case_number")] for row in i2p[1:]}
    with (source / RELABEL).open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    (OUT / RELABEL).parent.mkdir(parents=True, exist_ok=True)
    with (OUT / RELABEL).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(r for r in rows if r[header.index("case_number")] in cases)
    notes["nsfw_erasure_bench"].append(f"{RELABEL}: the rows of the sampled I2P case numbers")
    for path in sorted((source / "esd_artist_style_prompts").glob("*.csv")):
        name = f"esd_artist_style_prompts/{path.name}"
        _copy_rows(path, OUT / name, ESD_ROWS)
    notes["esd_artist_style_prompts"] = [f"every CSV: {ESD_ROWS} rows at a fixed stride"]
    people = json.loads((source / "dalleval_bias/prompt_list.json").read_text(encoding="utf-8"))
    (OUT / "dalleval_bias").mkdir(parents=True, exist_ok=True)
    sample = people[:: max(1, len(people) // DALLEVAL_ITEMS)][:DALLEVAL_ITEMS]
    (OUT / "dalleval_bias/prompt_list.json").write_text(json.dumps(sample, indent=2) + "\n", encoding="utf-8")
    notes["dalleval_bias"] = [f"prompt_list.json: {DALLEVAL_ITEMS} items at a fixed stride"]
    for folder, lines in sorted(notes.items()):
        original = (source / folder / "SOURCES.md").read_text(encoding="utf-8")
        kept = "\n".join(f"- {line}" for line in lines)
        (OUT / folder / "SOURCES.md").write_text(
            f"{original.rstrip()}\n\n## Sample kept in genguard's tests (tests/data/make_prompt_sample.py)\n\n"
            f"{kept}\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
