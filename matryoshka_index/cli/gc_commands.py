"""``mindex gc``: remove the temporaries that killed runs left behind (never those of a running one)."""

from __future__ import annotations

from pathlib import Path

import click

from ..storage import human_bytes, sweep_stale, temp_root
from ._common import user_errors


@click.command("gc")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@user_errors
def gc_command(paths, dry_run):
    """Remove stale temporaries left by killed or crashed runs in PATH (default: the current directory).

    \b
    Removed: .NAME.*.tmp files and directories of unfinished writes beside an output, .NAME.*.old
    left by a save interrupted mid-swap (the previous index is put back first if its name is
    empty), and mindex-spill-* / mindex-edge-* work directories in $MINDEX_TMPDIR (else the system
    temp folder) and in PATH. A temporary whose owner is still running is locked by it and kept.
    PATH may be a folder (every temporary in it) or an index, adaptor or output file (the temporaries
    of that one output, beside it).
    """
    roots: list[tuple[Path, str | None]] = []  # (folder, only the temporaries of this output name)
    for p in paths or (".",):
        path = Path(p).absolute()
        saved = path.is_dir() and any((path / f).is_file() for f in ("manifest.json", "adaptor.json"))
        if path.is_dir() and not saved:
            roots.append((path, None))
        else:  # an index, an adaptor, a file or a name that is gone: its own temporaries beside it
            roots.append((path.parent, path.name))
    roots.append((temp_root(), None))
    done: list[tuple[Path, int, str]] = []
    seen: set[tuple[Path, str | None]] = set()
    for root, name in roots:
        key = (root.resolve(), name)
        if key in seen:
            continue
        seen.add(key)
        done += sweep_stale(root, name=name, dry_run=dry_run)
    for path, size, what in done:
        click.echo(f"{what} {path}" + (f" ({human_bytes(size)})" if size else ""))
    total = sum(size for _, size, _ in done)
    verb = "would free" if dry_run else "freed"
    where = ", ".join(str(r / n) if n else str(r) for r, n in sorted(seen, key=str))
    if done:
        click.echo(
            f"{len(done)} stale temporar{'y' if len(done) == 1 else 'ies'}, {verb} {human_bytes(total)} ({where})"
        )
    else:
        click.echo(f"nothing to remove in {where}")


COMMANDS = [gc_command]
