"""`python -m chestaid.apps.node node RUN --store DIR` / `... worklist DIR`: the node's commands on their own."""

import sys

import typer

from chestaid.apps.node.commands import node, worklist
from chestaid.core.errors import ChestaidError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
app.command("node")(node)
app.command("worklist")(worklist)

if __name__ == "__main__":
    try:
        app()
    except ChestaidError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
