"""Command line: python -m bench {main,sweep,report,gate,...} --help"""

from __future__ import annotations

import errno
import sys

from ..environment import raise_on_sigterm, stop_code, stop_name
from ..plugins import PluginError, load_plugins
from ..schema import parse_attention_spec
from .parser import build_parser

# a full disk, a read-only or forbidden folder, a quota: said in one line naming the path
_STORAGE_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


class UnknownAttention(ValueError):
    """An --attention value that names no registered mechanism or configuration."""


def resolve_attention(spec: str, flag: str = "--attention") -> tuple[str, dict]:
    """A named configuration ('linrec-official') or 'name:key=value:...' -> (mechanism, options), through the one
    registry. Called after --plugin modules are imported, so their names resolve like the built-in ones."""
    import difflib

    from models.attention import available_attentions, list_attentions

    named = list_attentions()
    if spec in named:
        return named[spec]
    try:
        name, options = parse_attention_spec(spec)
    except ValueError as err:
        raise UnknownAttention(f"{flag} {err}") from None
    if name not in available_attentions():
        known = sorted({*named, *available_attentions()})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UnknownAttention(
            f"{flag} {spec!r}: no such mechanism or named configuration; {hint}registered: {', '.join(known)} "
            "(a --plugin module adds its own)"
        )
    return name, options


def _resolve_attention_flags(args) -> None:
    """Turn every command's --attention strings into (mechanism, options) now that plugins are loaded; an unknown
    name exits with status 2 before anything runs."""
    specs = getattr(args, "attention", None)
    if not specs:
        return
    try:
        if args.command == "train":  # one mechanism; a named configuration's options join --option / --variant
            name, options = resolve_attention(specs)
            args.attention, args.option = name, [*options.items(), *(args.option or [])]
        else:
            args.attention = [resolve_attention(spec) for spec in specs]
    except UnknownAttention as err:
        print(f"python -m bench {args.command}: error: {err}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        load_plugins(getattr(args, "plugin", None) or [])
    except PluginError as err:
        sys.exit(str(err))
    _resolve_attention_flags(args)
    raise_on_sigterm()  # SIGTERM stops every command as Ctrl-C does: children stopped, what was kept said
    try:
        args.func(args)
    except KeyboardInterrupt as stop:  # commands that keep something say what and how to resume themselves
        print(f"\n{args.command}: {stop_name(stop)}", file=sys.stderr)
        sys.exit(stop_code(stop))
    except OSError as err:
        if err.errno not in _STORAGE_ERRORS:
            raise
        where = f" {err.filename}" if err.filename else ""
        sys.exit(
            f"{args.command}: cannot write{where}: {err.strerror or err} (rows and checkpoints written before are "
            "kept; free space or choose another --out, then run the same command again)"
        )
