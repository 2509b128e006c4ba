"""Choosing a search's winner: significance first, cheaper only among configurations that are tied.

The most accurate trial on the dev problems is the maximum of many noisy
estimates, and on a few dozen problems the gaps between configurations are
about one standard error: taking the best point estimate, and the cheaper of
equal estimates, picks the luckiest cheap configuration (one sample at T=0.3
won a search with 35% of 20 dev problems, then scored 13.3% on test against
greedy's 20%). The rule here, over the complete trials that fit the budget
(one per configuration):

1. The leader is the configuration with the best dev accuracy.
2. The tied set is the leader and every configuration whose paired difference
   to the leader on the same dev problems (`orchestra.significance.paired_difference`)
   is not significant; the others are out, for good.
3. Racing: while a tied configuration still disagrees with the leader on some
   problem and the dev split has problems left (up to `race_limit`), the tied
   configurations run the next `chunk` dev problems and steps 1-2 repeat on
   the longer prefix, so leaders that are really different separate.
4. The winner is the cheapest of the final tied set (by the search's cost
   measure; then the more accurate, then the earlier trial).

Cheaper wins only among configurations the dev data cannot tell apart, and
extra dev problems are spent only where they decide something. A race's
outcomes are stored in the study (user attribute `race.<trial>`), so rerunning
the same search reaches the same winner without evaluating anything again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna

from orchestra.cache import GenerationCache
from orchestra.paths import default_cache_path
from orchestra.significance import Difference, Interval, mean_interval, paired_difference
from orchestra.tasks import load_task
from orchestra.search.evaluate import evaluate
from orchestra.search.objectives import Objective
from orchestra.search.outcomes import Outcome, from_json, to_json
from orchestra.search.outputs import best_recipe, measured_trials
from orchestra.search.study import SearchSettings

Rule = Literal["only_configuration", "significantly_best", "cheapest_of_tied"]

#: Outcomes of problems [start, stop) of the dev split for a trial (fewer if the split ends).
Extend = Callable[[int, int, int], Sequence[Outcome]]


@dataclass
class Contender:
    """One configuration: its trial and its outcomes on the first dev problems, in split order."""

    trial: int
    outcomes: list[Outcome]
    structure: str = ""

    def correct(self, depth: int) -> list[float]:
        return [float(o.correct) for o in self.outcomes[:depth]]

    def accuracy(self, depth: int) -> float:
        return sum(self.correct(depth)) / depth

    def cost(self, depth: int) -> float:
        return sum(o.cost for o in self.outcomes[:depth]) / depth


@dataclass(frozen=True)
class Round:
    """One comparison of the race: on how many dev problems, who led, who stayed tied, who dropped out."""

    problems: int
    leader: int
    tied: tuple[int, ...]
    out: tuple[int, ...]


@dataclass(frozen=True)
class Standing:
    """Where a configuration ended: on the problems of the last round it took part in."""

    trial: int
    structure: str
    problems: int
    accuracy: Interval
    cost: float
    leader_ahead: Difference | None  # the round's leader minus this configuration; None: it led
    tied: bool  # in the final tied set

    def to_json(self) -> dict[str, Any]:
        return {
            "trial": self.trial, "structure": self.structure, "problems": self.problems,
            "accuracy": self.accuracy.model_dump(), "cost": self.cost, "tied": self.tied,
            "leader_ahead": None if self.leader_ahead is None else _difference_json(self.leader_ahead),
        }


@dataclass(frozen=True)
class Winner:
    """The chosen configuration, the rule that chose it, and the race that led there."""

    trial: int
    rule: Rule
    leader: int
    tied: tuple[int, ...]
    problems: int
    accuracy: Interval
    cost: float
    rounds: tuple[Round, ...]
    standings: tuple[Standing, ...] = field(default=())
    undecided: bool = False  # tied configurations still disagree with the leader: more dev problems could separate them

    def describe(self) -> str:
        """One sentence: which trial won, by which rule, against whom."""
        where = f"{self.problems} dev problems"
        if len(self.rounds) > 1:
            where += f" (raced from {self.rounds[0].problems})"
        if self.rule == "only_configuration":
            return f"trial {self.trial} is the only complete configuration within budget ({where})"
        if self.rule == "significantly_best":
            return f"trial {self.trial} is the most accurate, significantly ahead of every other configuration on {where}"
        others = ", ".join(str(t) for t in self.tied)
        line = (f"trial {self.trial} is the cheapest of {len(self.tied)} configurations statistically tied with "
                f"the leader (trial {self.leader}) on {where}: trials {others}")
        if self.undecided:
            line += "; more dev problems (--race-limit, a larger dev split) could separate them"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "trial": self.trial, "rule": self.rule, "explanation": self.describe(), "leader": self.leader,
            "tied": list(self.tied), "undecided": self.undecided, "dev_problems": self.problems, "dev_accuracy": self.accuracy.model_dump(),
            "cost": self.cost,
            "rounds": [{"problems": r.problems, "leader": r.leader, "tied": list(r.tied), "out": list(r.out)}
                       for r in self.rounds],
            "standings": [s.to_json() for s in self.standings],
        }


def _difference_json(difference: Difference) -> dict[str, Any]:
    return {**difference.model_dump(), "significant": difference.significant, "verdict": difference.verdict()}


def _versus(leader: Contender, other: Contender, depth: int) -> Difference:
    ids = [o.problem_id for o in leader.outcomes[:depth]]
    if ids != [o.problem_id for o in other.outcomes[:depth]]:
        raise ValueError(f"trials {leader.trial} and {other.trial} did not run the same dev problems")
    return paired_difference(leader.correct(depth), other.correct(depth))


def race(
    contenders: Sequence[Contender], *, extend: Extend | None = None, race_limit: int = 0, chunk: int = 100
) -> Winner:
    """The winner of `contenders` by the rule above; `extend` runs a trial on more dev problems."""
    if not contenders:
        raise ValueError("no configuration to choose from")
    if chunk < 1:
        raise ValueError("racing needs a chunk of 1+ problems")
    everyone = [Contender(c.trial, list(c.outcomes), c.structure) for c in contenders]
    alive = list(everyone)
    depth = min(len(c.outcomes) for c in alive)
    if depth == 0:
        raise ValueError("every configuration needs outcomes on at least one dev problem")
    last: dict[int, tuple[int, Difference | None]] = {}
    rounds: list[Round] = []
    while True:
        leader = max(alive, key=lambda c: (c.accuracy(depth), -c.cost(depth), -c.trial))
        versus = {c.trial: _versus(leader, c, depth) for c in alive if c is not leader}
        out = [c for c in alive if c is not leader and versus[c.trial].significant]
        alive = [c for c in alive if c not in out]
        last.update({c.trial: (depth, versus.get(c.trial)) for c in [*alive, *out]})
        rounds.append(Round(depth, leader.trial, tuple(c.trial for c in alive), tuple(c.trial for c in out)))
        # a configuration that agrees with the leader on every problem is not separated by more of them
        undecided = any(versus[c.trial].only_a or versus[c.trial].only_b for c in alive if c is not leader)
        target = min(depth + chunk, race_limit)
        if not undecided or extend is None or target <= depth:
            break
        for c in alive:
            if len(c.outcomes) < target:
                c.outcomes.extend(extend(c.trial, len(c.outcomes), target))
        reached = min(target, *(len(c.outcomes) for c in alive))
        if reached <= depth:  # the dev split ran out
            break
        depth = reached
    winner = min(alive, key=lambda c: (c.cost(depth), -c.accuracy(depth), c.trial))
    rule: Rule = (
        "only_configuration" if len(everyone) == 1 else "significantly_best" if len(alive) == 1 else "cheapest_of_tied"
    )
    tied = {c.trial for c in alive}
    standings = []
    for c in everyone:
        problems, difference = last[c.trial]
        standings.append(Standing(c.trial, c.structure, problems, mean_interval(c.correct(problems)),
                                  c.cost(problems), difference, c.trial in tied))
    standings.sort(key=lambda s: (not s.tied, -s.problems, -s.accuracy.estimate, s.cost, s.trial))
    return Winner(
        trial=winner.trial, rule=rule, leader=rounds[-1].leader, tied=tuple(sorted(tied)), problems=depth,
        accuracy=mean_interval(winner.correct(depth)), cost=winner.cost(depth), rounds=tuple(rounds),
        standings=tuple(standings), undecided=undecided,
    )


def contenders_of(study: optuna.Study, objective: Objective) -> list[Contender]:
    """Complete trials within budget, one per configuration, with their outcomes on the trials' dev problems."""
    found = []
    for t in measured_trials(study):
        if "duplicate_of" in t.user_attrs or not t.user_attrs.get("outcomes"):
            continue
        if objective.feasible(t.user_attrs["cost"]):
            found.append(Contender(t.number, from_json(t.user_attrs["outcomes"]), t.user_attrs.get("structure", "")))
    return found


def choose_winner(
    study: optuna.Study, settings: SearchSettings, *, report: Callable[[str], None] | None = None
) -> Winner | None:
    """Race the study's contenders on its dev split; None when no complete trial fits the budget.

    A race starts from the trials' own dev problems every time; the outcomes of
    problems raced before are read back from the study, only new ones are run.
    """
    contenders = contenders_of(study, settings.objective)
    if not contenders:
        return None
    task = load_task(settings.task)
    pool = task.problems("dev", settings.race_limit) if settings.race_limit > settings.dev_limit else []
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    own = {c.trial: len(c.outcomes) for c in contenders}
    cache = GenerationCache(settings.cache or default_cache_path()) if settings.replay and pool else None

    def extend(trial: int, start: int, stop: int) -> list[Outcome]:
        raced = from_json(study.user_attrs.get(f"race.{trial}"))  # problems own[trial], own[trial] + 1, ...
        missing = pool[own[trial] + len(raced):stop]
        if missing:
            first = own[trial] + len(raced) + 1
            if report is not None:
                report(f"racing trial {trial} on dev problems {first}-{first + len(missing) - 1}")
            measured = asyncio.run(evaluate(best_recipe(trials[trial]), task, missing, settings.objective,
                                            cache=cache, concurrency=settings.concurrency))
            raced += measured.outcomes
            study.set_user_attr(f"race.{trial}", to_json(raced))
        return raced[start - own[trial]:stop - own[trial]]

    try:
        return race(contenders, extend=extend, race_limit=len(pool), chunk=settings.race_chunk)
    finally:
        if cache is not None:
            cache.close()
