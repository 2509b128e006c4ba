"""Oracle scorers: allowed for measuring, refused for choosing, and marked wherever a result is shown.

An oracle scorer (`task`, `execution`, any scorer registered with `oracle=True`)
reads the reference answer or the hidden tests. A recipe that picks by one is a
measurement — `best_of_n {scorer: task}` is "oracle best-of-n", the coverage a
perfect selector would reach — not something that could answer a user. So:

- `orchestra run` and `orchestra scale` run such a recipe (that is measuring),
  and every table, comparison, CSV and JSON that shows it marks it
  (`recipe (oracle)`, an `oracle` field listing where it reads the answer);
- `orchestra search` refuses a space that offers an oracle scorer (the search
  would pick the answer key) and `orchestra serve` refuses a recipe that uses
  one, unless told `--allow-oracle` (in Python: `allow_oracle=True`), which is
  for measuring, e.g. how far a searched selector is from the oracle.

`Recipe.oracle_uses` is the single source: where a recipe names an oracle scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel

from orchestra.scorer import oracle_scorers_named

if TYPE_CHECKING:
    from orchestra.recipe import Recipe

#: What a recipe's name carries in a table when it uses an oracle scorer.
ORACLE_MARK = "(oracle)"

#: A table's note on the mark.
ORACLE_NOTE = f"{ORACLE_MARK}: chooses with a scorer that reads the reference answer — a measurement, not deployable"


class OracleRefused(ValueError):
    """A recipe or search space that would choose answers by the answer key where that is not allowed."""


class OracleUse(NamedTuple):
    """One place a recipe names an oracle scorer: node `pick`, parameter `scorer`, scorer `task`."""

    node: str
    param: str
    scorer: str

    def __str__(self) -> str:  # how JSON, CSV and summaries list it: pick.scorer=task
        return f"{self.node}.{self.param}={self.scorer}"

    def phrase(self) -> str:
        return f"node {self.node!r} names the oracle scorer {self.scorer!r} (params.{self.param})"


def oracle_uses_of(node_id: str, params: BaseModel) -> list[OracleUse]:
    """Each oracle scorer a node's (validated) parameters name, defaults included."""
    return [OracleUse(node_id, field, name) for field, name in oracle_scorers_named(params).items()]


def marked(name: str, oracle: bool | Sequence[object]) -> str:
    """A recipe's name as a table shows it: `oracle_best_of_8 (oracle)` when it uses an oracle scorer."""
    return f"{name} {ORACLE_MARK}" if oracle else name


def refuse_oracle(recipe: Recipe, *, doing: str, allow: bool) -> None:
    """Raise `OracleRefused` (one line) when `recipe` uses an oracle scorer and `allow` is off.

    `doing` is what would be done with the recipe ("serving"): the message says
    where the recipe reads the answer and how to allow it for measurement.
    """
    uses = recipe.oracle_uses
    if uses and not allow:
        where = "; ".join(use.phrase() for use in uses)
        raise OracleRefused(
            f"recipe {recipe.name!r}: {where}, which reads the reference answer; {doing} it is refused "
            "(pass --allow-oracle, in Python allow_oracle=True, to allow it for measurement)"
        )
