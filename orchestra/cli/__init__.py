"""The `orchestra` command line: one typer app, a module per command.

Every command imports its heavy parts (torch, optuna, uvicorn) when it runs, so
`orchestra --help` stays fast.
"""

import typer

from orchestra.cli.info import graph, models, schema, tasks, techniques
from orchestra.cli.reward import reward_app
from orchestra.cli.report import report
from orchestra.cli.run import run
from orchestra.cli.scale import scale
from orchestra.cli.search import search
from orchestra.cli.serve import serve

app = typer.Typer(
    help="orchestra: spend inference-time compute through recipes, and see what each token buys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (run, report, scale, serve, search, schema, graph, models, techniques, tasks):
    app.command()(command)
app.add_typer(reward_app, name="reward")
