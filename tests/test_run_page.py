"""`orchestra report`: the data each page is built from, and the rendered HTML, on folders made
with the fake backend (a run, a --compare run, a particle filter, a scale curve, a search). No model."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import yaml
from fake_backend import fake_backend, vote_recipe, write_sums  # noqa: F401  (fixture)
from search_fixtures import fake_space, write_split_sums
from typer.testing import CliRunner

import orchestra
from orchestra.cli import app
from orchestra.recipe import Recipe
from orchestra.run_page import folder_kind, render_page, write_page
from orchestra.run_page.compare_view import read_compare
from orchestra.run_page.run_view import CANDIDATES_SHOWN, read_run
from orchestra.run_page.scale_view import read_scale
from orchestra.run_page.search_view import pareto_numbers, read_search
from orchestra.run_page.step_tree import split_steps

ATTACK = "<script>alert('x')</script>"


class _Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def by_id(self, ident: str) -> dict[str, str] | None:
        return next((attrs for _, attrs in self.tags if attrs.get("id") == ident), None)

    def with_class(self, name: str, tag: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.tags if name in a.get("class", "").split() and (tag is None or t == tag)]


def _run(tmp_path: Path, n: int = 4, problems: int = 3, name: str = "vote") -> Path:
    task = write_sums(tmp_path / "sums.jsonl", problems, extra={0: ATTACK})
    out = tmp_path / name
    orchestra.run(Recipe.model_validate(vote_recipe(name, n=n)), task, out=out, cache=False)
    return out


def test_a_run_page_shows_every_problem_and_candidate_marked(tmp_path: Path, fake_backend) -> None:
    folder = _run(tmp_path)
    assert folder_kind(folder) == "run"
    view = read_run(folder)
    assert [p.id for p in view.problems] == ["p0", "p1", "p2"]
    first = view.problems[0]
    assert first.question is not None and ATTACK in first.question and first.reference == "3"
    samples, vote = first.nodes
    assert (samples.node, vote.node) == ("samples", "vote")
    # the fake model's samples answer correct + (1, 0, 2, 0): wrong, right, wrong, right
    assert [c.right for c in samples.candidates] == [False, True, False, True]
    assert vote.candidates[0].right is True and vote.candidates[0].answer == "3"
    assert set(vote.candidates[0].parents) == {c.id for c in samples.candidates if c.right}
    assert view.accuracy.estimate == 1.0 and view.coverage.estimate == 1.0
    assert [row.node for row in view.cost_by_node] == ["samples"]

    html = render_page(folder)
    page = _Elements(html)
    assert page.by_id("report")["data-kind"] == "run"
    for ident in ("summary", "problems", "filter-wrong"):
        assert page.by_id(ident) is not None, ident
    problems = page.with_class("problem")
    assert [p["data-correct"] for p in problems] == ["true"] * 3
    shown = [c for p in view.problems for node in p.nodes for c in node.candidates]
    assert len(page.with_class("candidate")) == len(shown) > 3 * 4
    assert len(page.with_class("wrong", "div")) == sum(c.right is False for c in shown) >= 3 * 2
    assert len(page.with_class("dag", "svg")) == 1 and len(page.with_class("node", "g")) == 2
    assert "100.0% [100.0%, 100.0%]" in html
    assert ATTACK not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched


def test_a_wrong_run_is_marked_wrong_and_candidates_are_capped(tmp_path: Path, fake_backend) -> None:
    folder = _run(tmp_path, n=CANDIDATES_SHOWN + 4, problems=1)
    samples = read_run(folder).problems[0].nodes[0]
    assert len(samples.candidates) == CANDIDATES_SHOWN and samples.hidden == 4
    assert "4 more candidates not shown" in render_page(folder)
    (tmp_path / "single").mkdir()
    single = _run(tmp_path / "single", n=1, problems=2, name="one")  # one sample answers correct + 1
    page = _Elements(render_page(single))
    assert [p["data-correct"] for p in page.with_class("problem")] == ["false", "false"]


def test_cli_report_writes_the_page_and_prints_its_path(tmp_path: Path, fake_backend) -> None:
    folder = _run(tmp_path, problems=1)
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(folder / "report.html")
    assert (folder / "report.html").read_text().startswith("<!DOCTYPE html>")
    elsewhere = tmp_path / "page.html"
    assert write_page(folder, elsewhere) == elsewhere and elsewhere.is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_run_still_going_shows_what_has_finished(tmp_path: Path, fake_backend) -> None:
    folder = _run(tmp_path, problems=2)
    (folder / "summary.json").unlink()
    with (folder / "trace.jsonl").open("a") as handle:
        handle.write('{"problem_id": "p1", "node": "sam')  # a line being written
    view = read_run(folder)
    assert view.summary is None and len(view.problems) == 2 and view.accuracy.estimate == 1.0
    assert "running: no summary.json yet" in render_page(folder)


def test_cli_report_errors_are_one_line(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "is not a run, --compare, scale or search folder" in " ".join(empty.output.split())
    assert not (tmp_path / "empty" / "report.html").exists()
    (tmp_path / "empty" / "run.json").write_text("{not json")
    (tmp_path / "empty" / "results.jsonl").write_text("")
    damaged = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    # the console wraps at its width, which the temporary folder's path length moves: compare words
    assert damaged.exit_code == 2 and "cannot be read" in " ".join(damaged.output.split())
    assert "Traceback" not in damaged.output


def test_a_compare_page_marks_where_the_recipes_disagree(tmp_path: Path, fake_backend) -> None:
    task = write_sums(tmp_path / "sums.jsonl", 3)
    recipes = []
    for name, n in (("vote", 4), ("single", 1)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(Recipe.model_validate(vote_recipe(name, n=n)).to_yaml())
        recipes.append(path)
    base = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["run", str(recipes[0]), "--compare", str(recipes[1]), "--task", task,
                                      "--out", str(base), "--no-cache"])
    assert result.exit_code == 0, result.output
    assert folder_kind(base) == "compare"
    view = read_compare(base)
    assert [r.name for r in view.runs] == ["vote", "single"]
    assert view.problem_ids == ["p0", "p1", "p2"] and view.disagree == {"p0", "p1", "p2"}

    page = _Elements(render_page(base))
    assert page.by_id("report")["data-kind"] == "compare"
    assert page.by_id("filter-disagree") is not None and page.by_id("filter-wrong") is not None
    problems = page.with_class("problem")
    assert [(p["data-correct"], p["data-disagree"]) for p in problems] == [("true", "true")] * 3
    assert len(page.with_class("recipe-run")) == 6 and len(page.with_class("dag", "svg")) == 2
    ids = [attrs["id"] for _, attrs in page.tags if "id" in attrs]
    assert len(ids) == len(set(ids))  # two recipes' sections and DAGs share no id


def test_a_particle_filter_is_drawn_as_a_tree_of_its_steps(tmp_path: Path, fake_backend) -> None:
    from test_stepwise_search import recipe, scripted

    fake_backend.script = scripted
    out = tmp_path / "pf"
    orchestra.run(recipe("particle_filtering", rollouts=6), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    node = read_run(out).problems[0].nodes[0]
    assert node.technique == "particle_filtering" and node.tree is not None
    tree = _Elements(str(node.tree))
    leaves = [g for g in tree.with_class("step", "g") if {"right", "wrong", "unknown"} & set(g["class"].split())]
    assert len(leaves) == len({c.text for c in node.candidates})
    assert tree.with_class("chosen", "line")  # the chosen answer's path
    assert all("prm" in c.scores for c in node.candidates)
    page = _Elements(render_page(out))
    assert len(page.with_class("tree", "svg")) == 1


def test_a_search_tree_is_drawn_from_its_recorded_events(tmp_path: Path, fake_backend) -> None:
    from test_stepwise_search import depth_of, recipe

    fake_backend.script = lambda request, prompt, index: "Answer: 7" if depth_of(prompt) >= 2 else f"s{index} ; x"
    out = tmp_path / "beams"
    orchestra.run(recipe("beam_search", rollouts=6, beam_width=3), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    events = json.loads((out / "trace.jsonl").read_text().splitlines()[0])["events"]
    scored = [e for e in events if e["kind"] == "scored"]
    dropped = {i for e in events if e["kind"] == "prune" for i in e["dropped"]}
    node = read_run(out).problems[0].nodes[0]
    assert node.tree_from_events
    tree = _Elements(str(node.tree))
    assert tree.with_class("tree", "svg")[0].get("data-events") == "true"
    steps = tree.with_class("step", "g")
    assert len(steps) == len(scored) + 1  # every scored partial answer, and the start
    assert len(tree.with_class("pruned", "g")) == len(dropped) == 8  # 4 dropped at each of 2 rounds
    assert len(tree.with_class("score", "text")) == len(scored)  # a PRM score on each node
    # the chosen path: start, two kept steps, the chosen answer
    chosen = tree.with_class("chosen", "g")
    assert len(chosen) == 4 and "pruned" not in " ".join(g["class"] for g in chosen)
    assert len(tree.with_class("chosen", "line")) == 3
    page = render_page(out)
    assert 'data-events="true"' in page and "copies kept by resampling" in page


def test_a_particle_filter_draws_its_resampled_copies(tmp_path: Path, fake_backend) -> None:
    from test_stepwise_search import recipe, scripted

    fake_backend.script = scripted
    out = tmp_path / "pf"
    sharp = recipe("particle_filtering", rollouts=6, softmax_temperature=0.05)
    orchestra.run(sharp, write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    events = json.loads((out / "trace.jsonl").read_text().splitlines()[0])["events"]
    copied = {i for e in events if e["kind"] == "resample" for i in e["kept"] if e["kept"].count(i) > 1}
    assert copied  # the scores differ and the temperature sharpens them: the best particles are copied
    svg = str(read_run(out).problems[0].nodes[0].tree)
    assert len(_Elements(svg).with_class("copies", "text")) == len(copied)
    assert "resampling kept" in svg


def test_a_trace_without_events_is_drawn_from_its_answers(tmp_path: Path, fake_backend) -> None:
    from test_stepwise_search import recipe, scripted

    fake_backend.script = scripted
    out = tmp_path / "pf"
    orchestra.run(recipe("particle_filtering", rollouts=6), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    trace = out / "trace.jsonl"  # as an older run wrote it
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    trace.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "events"}) + "\n" for r in records))
    node = read_run(out).problems[0].nodes[0]
    assert not node.tree_from_events
    tree = _Elements(str(node.tree))
    assert "data-events" not in tree.with_class("tree", "svg")[0]
    assert not tree.with_class("pruned", "g") and tree.with_class("chosen", "line")


def test_steps_are_split_keeping_their_delimiter() -> None:
    assert split_steps("a ;b ;Answer: 7", ";") == ["a ;", "b ;", "Answer: 7"]
    assert split_steps("a\n\nb\n\n", "\n\n") == ["a\n\n", "b\n\n"]
    assert split_steps("no steps", None) == ["no steps"]


def test_a_scale_page_draws_accuracy_against_n_with_its_band(tmp_path: Path, fake_backend) -> None:
    path = tmp_path / "vote.yaml"
    path.write_text(Recipe.model_validate(vote_recipe(n=4)).to_yaml())
    out = tmp_path / "scale"
    result = CliRunner().invoke(app, ["scale", str(path), "--task", write_sums(tmp_path / "sums.jsonl", 3), "--n", "1,2,4",
                                      "--out", str(out), "--cache", str(tmp_path / "cache.sqlite")])
    assert result.exit_code == 0, result.output
    assert folder_kind(out) == "scale"
    view = read_scale(out)
    assert [r.n for r in view.result.rows] == [1, 2, 4]
    page = _Elements(render_page(out))
    assert page.by_id("report")["data-kind"] == "scale" and page.by_id("scale") is not None
    assert len(page.with_class("chart", "svg")) == 1 and len(page.with_class("point", "circle")) == 3
    assert page.with_class("band", "polygon")


def test_pareto_front_keeps_trials_no_other_beats() -> None:
    # (number, cost, accuracy): 2 costs more than 1 for less; 3 is dearer but better
    assert pareto_numbers([(0, 5.0, 0.5), (1, 2.0, 0.6), (2, 3.0, 0.4), (3, 9.0, 0.9)]) == [1, 3]


def test_a_search_page_lists_trials_and_draws_the_front(tmp_path: Path, fake_backend) -> None:
    task = write_split_sums(tmp_path / "sums.jsonl", dev=3)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(fake_space()))
    out = tmp_path / "search"
    result = CliRunner().invoke(app, ["search", str(space), "--task", task, "--trials", "4", "--dev-limit", "3",
                                      "--out", str(out), "--cache", str(tmp_path / "c.sqlite")])
    assert result.exit_code == 0, result.output
    assert folder_kind(out) == "search"
    view = read_search(out)
    assert len(view.trials) == 4 and view.front
    assert view.winner == json.loads((out / "summary.json").read_text())["winner"]["trial"]
    page = _Elements(render_page(out))
    assert page.by_id("report")["data-kind"] == "search" and page.by_id("trials") is not None
    assert len(page.with_class("trial", "tr")) == 4
    assert len(page.with_class("chart", "svg")) == 1 and page.with_class("winner", "circle")
