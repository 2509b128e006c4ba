"""The search's winner rule: significance first, racing to separate leaders, cheaper wins only among ties."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fake_backend import correct_answer, fake_backend  # noqa: F401
from search_fixtures import fake_space, write_split_sums

from orchestra.recipe import Recipe
from orchestra.search.holdout import greedy_like, holdout
from orchestra.search.objectives import Objective
from orchestra.search.outcomes import Outcome
from orchestra.search.space import space_from_dict
from orchestra.search.study import SearchSettings, open_study, run_worker, storage_url
from orchestra.search.winner import Contender, choose_winner, race
from orchestra.tasks import load_task


def _outcomes(pattern: str, cost: float) -> list[Outcome]:
    """'1' right, '0' wrong, problem i is `p{i}`."""
    return [Outcome(f"p{i}", bit == "1", cost) for i, bit in enumerate(pattern)]


class _More:
    """Racing's view of the dev split: each trial's full outcomes, handed out on request, calls logged."""

    def __init__(self, full: dict[int, list[Outcome]]):
        self.full = full
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, trial: int, start: int, stop: int) -> list[Outcome]:
        self.calls.append((trial, start, stop))
        return self.full[trial][start:stop]


def test_a_lucky_cheap_configuration_does_not_beat_a_better_one() -> None:
    # 20 dev problems: the cheap one is 10 points ahead (two problems, one standard error);
    # on the next 180 it is right on 25% and the costly one on 60%
    cheap = "1" * 8 + "0" * 12 + "1000" * 45
    better = "1" * 6 + "0" * 14 + "11100" * 36
    hopeless = "0" * 200
    more = _More({0: _outcomes(cheap, 10), 1: _outcomes(better, 40), 2: _outcomes(hopeless, 1)})
    start = [Contender(t, outcomes[:20]) for t, outcomes in more.full.items()]
    # on the 20 problems alone the two are tied (the old point-estimate rule took the cheap one)
    tied = race(start)
    assert tied.rule == "cheapest_of_tied" and tied.tied == (0, 1) and tied.leader == 0 and tied.trial == 0
    assert tied.problems == 20 and 2 not in tied.tied
    # racing on more dev problems separates them: the better one wins, significantly
    winner = race(start, extend=more, race_limit=200, chunk=30)
    assert winner.trial == 1 and winner.rule == "significantly_best" and winner.tied == (1,)
    assert [r.problems for r in winner.rounds][0] == 20 and winner.rounds[0].leader == 0
    assert winner.rounds[0].out == (2,)  # 0 of 20 is significantly worse from the start
    assert winner.problems < 200, "the race stops once the leaders separate"
    assert {trial for trial, _, _ in more.calls} == {0, 1}, "only tied configurations run more problems"
    assert winner.accuracy.low > 0.4 and winner.accuracy.estimate == pytest.approx(better[:winner.problems].count("1") / winner.problems)
    standing = {s.trial: s for s in winner.standings}
    assert standing[0].leader_ahead is not None and standing[0].leader_ahead.significant
    assert standing[2].problems == 20 and not standing[2].tied
    assert winner.to_json()["rule"] == "significantly_best" and "trial 1" in winner.describe()


def test_racing_separates_two_configurations_given_more_problems() -> None:
    # tied on the first 40 (30 vs 27 right), then A keeps 75% and B drops to 50%
    a = "1" * 30 + "0" * 10 + "1110" * 90
    b = "1" * 27 + "0" * 13 + "1100" * 90
    more = _More({5: _outcomes(a, 100), 6: _outcomes(b, 50)})
    start = [Contender(t, o[:40]) for t, o in more.full.items()]
    without = race(start, extend=more, race_limit=40)  # no dev problems left: a tie, the cheaper wins
    assert without.rule == "cheapest_of_tied" and without.trial == 6 and not more.calls
    assert without.undecided and "could separate them" in without.describe()
    raced = race(start, extend=more, race_limit=400, chunk=40)
    assert raced.trial == 5 and raced.rule == "significantly_best"
    assert len(raced.rounds) >= 2 and all(r.tied == (5, 6) for r in raced.rounds[:-1]) and raced.rounds[-1].out == (6,)
    assert [stop for _, _, stop in more.calls[::2]] == [r.problems for r in raced.rounds[1:]]


def test_cheaper_wins_only_among_tied_configurations() -> None:
    leader = _outcomes("11101" * 40, 100)   # 80%
    close = _outcomes("11011" * 38 + "10001" * 2, 50)  # 77%, disagrees with the leader on 84 problems
    cheap = _outcomes("10000" * 40, 5)   # 20%: much cheaper, significantly worse
    winner = race([Contender(1, leader), Contender(2, close), Contender(3, cheap)])
    assert winner.rule == "cheapest_of_tied" and winner.trial == 2 and winner.leader == 1
    assert winner.tied == (1, 2) and winner.rounds[-1].out == (3,)
    assert winner.cost == 50 and "cheapest of 2" in winner.describe()


def test_configurations_that_agree_everywhere_are_not_raced() -> None:
    same = "1100" * 10
    more = _More({1: _outcomes(same * 5, 30), 2: _outcomes(same * 5, 20)})
    winner = race([Contender(t, o[:40]) for t, o in more.full.items()], extend=more, race_limit=200)
    assert winner.trial == 2 and winner.rule == "cheapest_of_tied" and not more.calls and not winner.undecided
    assert race([Contender(4, _outcomes("10", 1))]).rule == "only_configuration"
    with pytest.raises(ValueError, match="same dev problems"):
        race([Contender(1, _outcomes("10", 1)), Contender(2, [Outcome("q0", True, 1), Outcome("q1", True, 1)])])
    with pytest.raises(ValueError):
        race([])


def _temperature_script(request, prompt, index):
    """T=0.5 always right; T=0.8 wrong on problem 3 and on two of every three problems from 4 on."""
    value = correct_answer(prompt)
    problem = int(prompt.split("Compute ", 1)[1].split(" ", 1)[0]) - 2
    wrong = request.temperature > 0.6 and (problem == 3 or (problem >= 4 and problem % 3 != 0))
    return f"Answer: {value + 1 if wrong else value}"


def test_a_study_races_on_the_dev_split_and_keeps_the_race(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = _temperature_script
    space = space_from_dict(fake_space(layers=[
        {"id": "gen", "options": [{"technique": "sample", "params": {
            "n": 1, "temperature": {"choices": [0.5, 0.8]}, "max_tokens": 8}}]},
        {"id": "select", "options": [{"technique": "majority_vote"}]},
    ]))
    task = write_split_sums(tmp_path / "sums.jsonl", dev=40, test=6)
    settings = SearchSettings(
        space=space, task=task, trials=2, dev_limit=4, first_rung=None, storage=storage_url(None, tmp_path),
        study_name="race", replay=False, race_limit=30, race_chunk=12, sampler="random",
    )
    study = open_study(settings)
    study.enqueue_trial({"gen.sample.temperature": 0.8})
    study.enqueue_trial({"gen.sample.temperature": 0.5})
    study = run_worker(settings)
    assert [len(t.user_attrs["outcomes"]) for t in study.trials] == [4, 4]
    assert [t.user_attrs["accuracy"] for t in study.trials] == [0.75, 1.0]
    calls = len(fake_backend.log.calls)
    lines: list[str] = []
    winner = choose_winner(study, settings, report=lines.append)
    assert winner is not None and winner.trial == 1 and winner.rule == "significantly_best"
    assert [r.problems for r in winner.rounds] == [4, 16] and winner.rounds[0].tied == (0, 1)
    assert len(fake_backend.log.calls) - calls == 2 * 12 and len(lines) == 2
    assert [len(study.user_attrs[f"race.{t}"]) for t in (0, 1)] == [12, 12]
    # the race is stored: choosing again evaluates nothing (no cache here, so any run would call the model)
    calls = len(fake_backend.log.calls)
    again = choose_winner(study, settings)
    assert again == winner and len(fake_backend.log.calls) == calls


def test_holdout_runs_greedy_beside_the_winner_with_paired_differences(tmp_path: Path, fake_backend) -> None:
    task = load_task(write_split_sums(tmp_path / "sums.jsonl", dev=0, test=8))
    vote = Recipe.model_validate({
        "name": "vote", "models": {"m": {"backend": "fake", "model": "fake-model"}},
        "nodes": [{"id": "gen", "technique": "sample", "params": {"n": 4, "temperature": 0.5, "max_tokens": 32}},
                  {"id": "pick", "technique": "majority_vote", "inputs": ["gen"]}],
    })
    greedy = greedy_like(vote)
    assert greedy.name == "greedy" and greedy.nodes[0].params == {"n": 1, "temperature": 0, "max_tokens": 32}
    assert list(greedy.models) == ["m"]
    result = asyncio.run(holdout([vote], task, Objective(budget=100), 8, greedy=greedy, cache=None))
    assert result is not None and result.problems == 8 and [r.recipe for r in result.rows] == ["vote", "greedy"]
    ahead, baseline = result.rows
    assert ahead.accuracy.estimate == 1.0 and baseline.accuracy.estimate == 0.0 and baseline.versus_greedy is None
    assert ahead.versus_greedy.significant and ahead.versus_greedy.only_a == 8
    saved = result.to_json()
    assert saved["rows"][0]["versus_greedy"]["verdict"] == "significant" and saved["problems_for_10_points"] > 8
    none = asyncio.run(holdout([vote], load_task(write_split_sums(tmp_path / "dev.jsonl", dev=3)), Objective(), 8,
                               greedy=greedy, cache=None))
    assert none is None
