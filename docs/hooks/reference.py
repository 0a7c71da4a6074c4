"""An MkDocs hook: the reference pages, written from the code each time the site is built.

The command line's reference comes from the argparse parser `miner` itself runs
(`miner.cli.main.build_parser`), the JSON-RPC reference from the method registry the node
dispatches through (`miner.node.rpc.registry.METHODS`, filled by importing
`miner.node.rpc.methods`). Nothing here is committed as Markdown, so `--help`, `help` over RPC and
the docs cannot drift apart: an option or method added in the code is in the next build.
"""

from __future__ import annotations

import argparse
import inspect
import json

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

CLI_PAGE = "reference/cli.md"
RPC_PAGE = "reference/rpc.md"
USAGE_WIDTH = 100  # argparse wraps usage to the terminal; the page must not depend on one


def on_files(files, config):
    """Add both pages as generated files; a hand-written copy would shadow the code's own."""
    from miner.cli.main import build_parser
    from miner.node.rpc.methods import METHODS

    for uri, text in ((CLI_PAGE, cli_markdown(build_parser())), (RPC_PAGE, rpc_markdown(METHODS))):
        if files.get_file_from_path(uri) is not None:
            raise PluginError(f"docs/{uri} is generated at build time (docs/hooks/reference.py): remove it")
        files.append(File.generated(config, uri, content=text))
    return files


# --------------------------------------------------------------------------- command line

def cli_markdown(parser: argparse.ArgumentParser) -> str:
    out = ["# Command line", "",
           "Every command and option of `miner`, read from the parser it runs "
           "(`miner.cli.main.build_parser`) when this site was built: the same words as "
           "`miner COMMAND --help`. The guides show them at work.", ""]
    for prog, summary, sub in _commands(parser):
        out += [f"## {prog}", ""]
        if summary:
            out += [_text(summary), ""]
        out += ["```text", _usage(sub).rstrip(), "```", ""]
        rows = [_row(a) for a in sub._actions if _shown(a)]
        if rows:
            out += ["| option | value | what it does |", "| --- | --- | --- |", *rows, ""]
    return "\n".join(out)


def _commands(parser: argparse.ArgumentParser, summary: str = ""):
    """(prog, one-line help, parser) for the parser and every subcommand under it, depth first,
    in the order the parser declares them."""
    yield parser.prog, summary or parser.description or "", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield from _commands(sub, helps.get(name) or "")


def _shown(action: argparse.Action) -> bool:
    """What `--help` lists: every argument but the subcommand slot and suppressed ones."""
    return not isinstance(action, argparse._SubParsersAction) and action.help != argparse.SUPPRESS


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help()


def _row(action: argparse.Action) -> str:
    names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
    return f"| {names} | {_value(action)} | {_text(_help(action))} |"


def _value(action: argparse.Action) -> str:
    """What follows the option on the command line, as argparse names it in usage."""
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    if not action.option_strings:
        return ""
    metavar = action.metavar or action.dest.upper()
    return f"`{metavar}`" + (" (repeatable)" if isinstance(action, argparse._AppendAction) else "")


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own expansion, so the page says what --help says
        text = text % {**vars(action), "prog": ""}
    return text


# --------------------------------------------------------------------------- JSON-RPC

def rpc_markdown(methods: dict) -> str:
    ordered = sorted(methods.values(), key=lambda m: (_group(m), m.name))
    out = ["# JSON-RPC methods", "",
           "Every method `miner node` serves, read from its registry "
           "(`miner.node.rpc.registry.METHODS`) when this site was built: the usage lines are what "
           "the `help` method answers. How to call them, with curl: "
           "[The node and JSON-RPC](../guide/node.md).", "",
           "| method | group | usage |", "| --- | --- | --- |"]
    out += [f"| [`{m.name}`](#{m.name}) | {_group(m)} | `{m.usage}` |" for m in ordered]
    out.append("")
    for m in ordered:
        out += [f"## {m.name}", "", f"`{m.usage}`", "", f"Group: {_group(m)} (`{m.handler.__module__}`).", ""]
        doc = inspect.getdoc(m.handler)
        if doc:
            out += [doc, ""]
        if m.params:
            out += ["| parameter | JSON type | required | default |", "| --- | --- | --- | --- |"]
            out += [f"| `{p.name}` | {p.kind} | {'yes' if p.required else 'no'} | "
                    f"{'' if p.required or p.default is None else f'`{json.dumps(p.default)}`'} |" for p in m.params]
            out.append("")
        else:
            out += ["No parameters.", ""]
    return "\n".join(out)


def _group(method) -> str:
    """The module a method is defined in names its group, as Core's help groups its commands."""
    return method.handler.__module__.rsplit(".", 1)[-1]


def _text(text: str) -> str:
    """Plain text in a Markdown table cell: Markdown's own characters escaped, no line breaks."""
    text = " ".join(text.split())
    for ch in "\\`*_[]|":
        text = text.replace(ch, "\\" + ch)
    return text.replace("<", "&lt;")
