"""`genguard policy`: check prompts against a pack, show packs, write an editable copy of one."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # the schema's pack name (Identifier)
import sys
from collections.abc import Iterator
from typing import TextIO

from genguard.guard.errors import BadInputError
from genguard.pipeline.cli_common import print_json


@click.group()
def policy() -> None:
    """Check prompts against a policy pack; show packs."""


# Bounds on `policy check --file` / stdin (a pack's `limits:` may tighten them): prompts per file, bytes
# per file and per line (a prompt is at most 20,000 characters, 80,000 bytes of UTF-8). A line is read
# at most this long, so a file without newlines never fills memory.
MAX_PROMPTS_PER_FILE = 10_000
MAX_PROMPT_FILE_BYTES = 16 * 1024 * 1024
MAX_PROMPT_LINE_BYTES = 80_000


@dataclasses.dataclass(frozen=True)
class PromptFileBounds:
    prompts: int = MAX_PROMPTS_PER_FILE
    file_bytes: int = MAX_PROMPT_FILE_BYTES
    line_bytes: int = MAX_PROMPT_LINE_BYTES


def _prompts_from(
    prompt: str | None, file: TextIO | None, bounds: PromptFileBounds = PromptFileBounds()
) -> Iterator[tuple[int | None, str]]:
    """(line number, prompt): None for a PROMPT argument; blank lines are skipped.

    Raises BadInputError naming the line where the input crosses one of `bounds` (the prompts before
    it are checked). A line is read in pieces of at most `bounds.line_bytes + 1` characters.
    """
    if prompt is not None and file is not None:
        raise click.UsageError("give PROMPT or --file, not both")
    if prompt is not None and prompt != "-":
        yield None, prompt
        return
    source = file if file is not None else sys.stdin
    total = prompts = number = 0
    while line := source.readline(bounds.line_bytes + 1):
        number += 1
        size = len(line.rstrip("\n").encode("utf-8", "surrogateescape"))
        if size > bounds.line_bytes:
            raise BadInputError(
                f"--file: line {number}: expected at most {bounds.line_bytes} bytes, found more"
            )
        total += size + line.endswith("\n")
        if total > bounds.file_bytes:
            raise BadInputError(
                f"--file: expected at most {bounds.file_bytes} bytes, found more by line {number}"
            )
        line = line.rstrip("\n")
        if line.strip():
            prompts += 1
            if prompts > bounds.prompts:
                raise BadInputError(
                    f"--file: expected at most {bounds.prompts} prompts, found more by line {number}"
                )
            yield number, line


@policy.command("check")
@click.argument("prompt", required=False)
@click.option(
    "--file",
    "file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="One prompt per line; - for stdin.",
)
@click.option("--policy", "policy_name", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per prompt, in input order.")
def policy_check(prompt: str | None, file: TextIO | None, policy_name: str, as_json: bool) -> None:
    """Check PROMPT (or a file / stdin of prompts) against a pack. Exit 3 if any was blocked, 2 if any
    prompt was refused as input (empty, NUL: the same check as generate's)."""
    from genguard.guard.policy import PolicyEngine, load_pack
    from genguard.guard.types import PromptAction, validate_prompt

    if prompt is None and file is None and sys.stdin.isatty():
        raise click.UsageError("give a PROMPT, --file FILE, or prompts on stdin")
    pack = load_pack(policy_name)
    engine = PolicyEngine(pack)
    limits = pack.spec.limits
    bounds = PromptFileBounds()
    if limits is not None:  # a pack's limits only tighten
        bounds = PromptFileBounds(
            min(bounds.prompts, limits.max_prompts_per_file or bounds.prompts),
            min(bounds.file_bytes, limits.max_file_bytes or bounds.file_bytes),
            min(bounds.line_bytes, limits.max_line_bytes or bounds.line_bytes),
        )
    any_blocked = any_bad = False
    for number, text in _prompts_from(prompt, file, bounds):
        try:
            validate_prompt(text)  # the same check as generate's
        except BadInputError as exc:
            if number is None:
                raise
            click.echo(f"error: line {number}: {exc}", err=True)  # the others are still checked
            any_bad = True
            continue
        decision = engine.check(text)
        any_blocked |= decision.action is PromptAction.BLOCK
        if as_json:
            print_json(decision.to_json())
        else:
            fired = ", ".join(f"{h.category}/{h.layer}/{h.rule}" for h in decision.rules) or "-"
            click.echo(f"{decision.action.value:8} {fired:40} {text}")
    if any_bad:
        sys.exit(2)
    if any_blocked:
        sys.exit(3)


@policy.command("show")
@click.argument("name", required=False)
def policy_show(name: str | None) -> None:
    """Show pack NAME (a shipped name or a path), or list the shipped packs."""
    from genguard.guard.policy import list_shipped_packs, load_pack

    if name is None:
        for pack_name in list_shipped_packs():
            pack = load_pack(pack_name)
            click.echo(f"{pack_name:10} version {pack.ref.version:8} sha256 {pack.ref.digest}")
        return
    pack = load_pack(name)
    click.echo(f"# {pack.ref.name} {pack.ref.version} sha256:{pack.ref.digest}")
    click.echo(pack.to_yaml())


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
    from genguard import policies
    from genguard.guard.policy import list_shipped_packs, load_pack

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
