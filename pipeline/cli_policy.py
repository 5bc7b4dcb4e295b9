"""`genguard policy init NAME`: an editable copy of a shipped pack, with its term files.

pipeline/cli.py imports this module, which adds the command to its `policy` group. Only click at load.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from pipeline.cli import policy

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # the schema's pack name (Identifier)


@policy.command("init")
@click.argument("name")
@click.option("--from", "source", default="default", show_default=True, help="The shipped pack to copy.")
@click.option(
    "--dir",
    "folder",
    default=".",
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write NAME.yaml and its terms/ folder.",
)
def policy_init(name: str, source: str, folder: Path) -> None:
    """Write NAME.yaml, a copy of a shipped pack (comments kept) named NAME, and the term files it names
    into terms/ next to it: edit them, then pass the file to --policy."""
    import policies
    from guard.errors import BadInputError
    from guard.policy import list_shipped_packs, load_pack

    if not _NAME.fullmatch(name):
        raise BadInputError(
            f"NAME: expected a pack name of lower-case letters, digits and _ starting with a letter, found {name!r}"
        )
    if source not in list_shipped_packs():
        raise BadInputError(f"--from: expected one of {', '.join(list_shipped_packs())}, found {source!r}")
    original = policies.PACK_DIR / f"{source}.yaml"
    text, count = re.subn(
        r"(?m)^name:[^\n]*$", f"name: {name}", original.read_text(encoding="utf-8"), count=1
    )
    if count != 1:
        raise BadInputError(f"--from {source}: expected a top-level `name:` line in {original}, found none")
    target = folder / f"{name}.yaml"
    terms = sorted(
        {
            str(rule_file)
            for line in text.splitlines()
            if line.strip().startswith("rule_files:")
            for rule_file in re.findall(r"terms/[A-Za-z0-9_.-]+\.yaml", line)
        }
    )
    writes = [(target, text)] + [
        (folder / rule_file, (policies.PACK_DIR / rule_file).read_text(encoding="utf-8"))
        for rule_file in terms
    ]
    # an identical term file already there (from another init) is kept; anything else is never overwritten
    writes = [(path, content) for path, content in writes if not _same(path, content) or path == target]
    existing = [str(path) for path, _ in writes if path.exists()]
    if existing:
        raise BadInputError(
            f"{existing[0]}: expected no such file (policy init never overwrites), found it already exists"
        )
    for path, content in writes:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    pack = load_pack(target)  # what was written loads, under its new name
    click.echo(
        f"wrote {target} ({pack.ref.name} {pack.ref.version}, sha256 {pack.ref.digest}) with {len(terms)} term files in {folder / 'terms'}"
    )


def _same(path: Path, content: str) -> bool:
    try:
        return path.is_file() and path.read_text(encoding="utf-8") == content
    except (OSError, UnicodeDecodeError):
        return False
