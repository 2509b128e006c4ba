"""Turning a model's reply into individual, runnable assert statements.

A small model asked for unit tests replies with anything: asserts in a code
block, asserts mixed into prose, a block that repeats the function and then
tests it, `unittest` classes, doctest transcripts, or a block with a syntax
error halfway through. Each test is kept as one assert statement, so one bad
test costs only itself:

1. Code regions are the fenced blocks (an unterminated last one included);
   a reply without fences is one region.
2. A region that parses is walked for asserts at the top level, in `test*`
   functions and methods, and under `if __name__ == "__main__":`; `unittest`
   calls (`self.assertEqual(a, b)` ...) become plain asserts. Asserts inside
   other functions (e.g. the model's own implementation) are not tests.
3. A region that does not parse is salvaged line by line: from each `assert`
   on a line (after list bullets or prose, up to a closing backtick) a test
   takes as many following lines as it needs to compile, or failing that drops
   trailing prose words; a doctest `>>> call` followed by its output
   line becomes `assert call == output`.
4. Every test is canonicalised (`ast.unparse` of its condition, the message
   dropped: messages often name variables that do not exist), must compile,
   must call the function under test when its name is known, must not be a
   constant, and is kept once.

`docstring_examples` reads the examples a function's own docstring gives
(the problem statement's public examples) into asserts of the same form.
"""

from __future__ import annotations

import ast
import doctest
import re
import textwrap

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_UNITTEST_COMPARISONS: dict[str, type[ast.cmpop]] = {
    "assertEqual": ast.Eq,
    "assertEquals": ast.Eq,
    "assertListEqual": ast.Eq,
    "assertTupleEqual": ast.Eq,
    "assertDictEqual": ast.Eq,
    "assertSetEqual": ast.Eq,
    "assertNotEqual": ast.NotEq,
    "assertIs": ast.Is,
    "assertIsNot": ast.IsNot,
    "assertIn": ast.In,
    "assertNotIn": ast.NotIn,
}


def parse_tests(text: str, entry_point: str | None = None, *, limit: int | None = None) -> list[str]:
    """The distinct assert statements in `text`, in order of appearance, at most `limit`.

    With `entry_point`, only asserts that call that function are kept.
    """
    tests: list[str] = []
    seen: set[str] = set()
    for region in _code_regions(text):
        for candidate in _asserts_in_region(region):
            test = _canonical(candidate, entry_point)
            if test is None or test in seen:
                continue
            seen.add(test)
            tests.append(test)
            if limit is not None and len(tests) >= limit:
                return tests
    return tests


def docstring_examples(stub: str, entry_point: str) -> list[str]:
    """The examples in the docstring of `entry_point` in `stub`, as asserts.

    They are public -- part of the problem statement the model is shown -- so
    using them is not peeking at hidden tests. Two layouts are read: doctest
    transcripts (`>>> f(1)` then `2` on the next line) and one-line examples
    with an arrow or equals sign (`f(1) == 2`, `f(1) -> 2`, `f(1) => 2`,
    `f(1) ➞ 2`, `f(1) returns 2`). An example that does not parse as Python is skipped.
    """
    try:
        tree = ast.parse(textwrap.dedent(stub))
    except (SyntaxError, ValueError):
        return []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    docstring = next((ast.get_docstring(f) for f in functions if f.name == entry_point), None)
    if not docstring:
        return []
    pairs: list[tuple[str, str]] = []
    try:
        pairs += [(e.source, e.want) for e in doctest.DocTestParser().get_examples(docstring) if e.want.strip()]
    except ValueError:  # a malformed doctest layout; the one-line reader below may still succeed
        pass
    for line in docstring.splitlines():
        pairs += _one_line_example(line, entry_point)
    tests: list[str] = []
    for call_source, expected_source in pairs:
        try:
            call = ast.parse(call_source.strip(), mode="eval").body
            expected = ast.parse(expected_source.strip(), mode="eval").body
        except (SyntaxError, ValueError):
            continue
        statement = ast.Assert(test=ast.Compare(left=call, ops=[ast.Eq()], comparators=[expected]), msg=None)
        test = _canonical(ast.fix_missing_locations(statement), entry_point)
        if test is not None and test not in tests:
            tests.append(test)
    return tests


_ARROWS = ("==>", "=>", "->", "\u279e", " returns ", " should return ", "==", " = ")


def _one_line_example(line: str, entry_point: str) -> list[tuple[str, str]]:
    """("f(1)", "2") from a docstring line such as "for f(1) => 2", trying a few readings
    of the expected side ("... = 8" after a worked sum, a trailing comment)."""
    begin = line.find(f"{entry_point}(")
    if begin < 0 or line.lstrip().startswith(("def ", ">>>")) and "==" not in line:
        return []
    text = line[begin:]
    for arrow in _ARROWS:
        call, found, expected = text.partition(arrow)
        if found and call.strip():
            expected = expected.strip().rstrip(".").strip()
            readings = [expected, expected.split(" #")[0], expected.rsplit("= ", 1)[-1]]
            return [(call, reading) for reading in dict.fromkeys(readings) if reading]
    return []


def _code_regions(text: str) -> list[str]:
    blocks = _FENCE.findall(text)
    return blocks if blocks else [text]


def _asserts_in_region(region: str) -> list[ast.Assert]:
    source = textwrap.dedent(region)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return _salvage(source)
    return _asserts_in_body(tree.body)


def _asserts_in_body(body: list[ast.stmt]) -> list[ast.Assert]:
    found: list[ast.Assert] = []
    for statement in body:
        if isinstance(statement, ast.Assert):
            found.append(statement)
        elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            converted = _from_unittest_call(statement.value)
            if converted is not None:
                found.append(converted)
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) and statement.name.startswith("test"):
            found.extend(_asserts_in_body(statement.body))
        elif isinstance(statement, ast.ClassDef):
            for member in statement.body:
                if isinstance(member, ast.FunctionDef) and member.name.startswith("test"):
                    found.extend(_asserts_in_body(member.body))
        elif isinstance(statement, ast.If) and _is_main_guard(statement.test):
            found.extend(_asserts_in_body(statement.body))
    return found


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _from_unittest_call(call: ast.Call) -> ast.Assert | None:
    """`self.assertEqual(a, b)` -> `assert a == b` (and the other common assertions)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    args = call.args
    condition: ast.expr | None = None
    if name in _UNITTEST_COMPARISONS and len(args) >= 2:
        condition = ast.Compare(left=args[0], ops=[_UNITTEST_COMPARISONS[name]()], comparators=[args[1]])
    elif name == "assertTrue" and args:
        condition = args[0]
    elif name == "assertFalse" and args:
        condition = ast.UnaryOp(op=ast.Not(), operand=args[0])
    elif name in ("assertIsNone", "assertIsNotNone") and args:
        op = ast.Is() if name == "assertIsNone" else ast.IsNot()
        condition = ast.Compare(left=args[0], ops=[op], comparators=[ast.Constant(None)])
    elif name == "assertAlmostEqual" and len(args) >= 2:  # unittest's default: equal to 7 places
        difference = ast.BinOp(left=args[0], op=ast.Sub(), right=args[1])
        rounded = ast.Call(func=ast.Name("round", ast.Load()), args=[difference, ast.Constant(7)], keywords=[])
        condition = ast.Compare(left=rounded, ops=[ast.Eq()], comparators=[ast.Constant(0)])
    if condition is None:
        return None
    return ast.fix_missing_locations(ast.Assert(test=condition, msg=None))


def _salvage(source: str) -> list[ast.Assert]:
    """Asserts and doctest examples from text that does not parse as a whole."""
    lines = [piece for line in source.splitlines() for piece in _salvage_pieces(line)]
    found: list[ast.Assert] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"assert\b", line):
            statement, used = _longest_prefix_statement(lines, i)
            if statement is not None:
                found.append(statement)
                i += used
                continue
        elif line.startswith(">>>"):
            statement, used = _doctest_example(lines, i)
            if statement is not None:
                found.append(statement)
                i += used
                continue
        elif re.match(r"(self\.)?assert[A-Z]\w*\(", line):
            statement, used = _longest_prefix_statement(lines, i)
            if statement is not None:
                found.append(statement)
                i += used
                continue
        i += 1
    return found


def _salvage_pieces(line: str) -> list[str]:
    """A line of prose-mixed text as code-like pieces: list bullets dropped, and split so that
    each `assert` on it starts a piece that ends at the next `assert` or closing backtick
    ("Check `assert f(1) == 2` and assert f(2) == 3" gives two)."""
    line = _LIST_MARK.sub("", line).strip()
    if line.startswith(">>>") or line.startswith("..."):
        return [line]
    starts = [m.start() for m in re.finditer(r"\bassert\b", line)]
    if not starts:
        return [line.strip("`").strip()]
    pieces = []
    for begin, end in zip(starts, starts[1:] + [len(line)]):
        piece = line[begin:end].split("`", 1)[0].strip()
        pieces.append(piece)
    return pieces


def _longest_prefix_statement(lines: list[str], start: int, max_lines: int = 8) -> tuple[ast.Assert | None, int]:
    """The shortest run of lines from `start` that parses as one assert (or unittest call)."""
    for used in range(1, min(max_lines, len(lines) - start) + 1):
        chunk = "\n".join(lines[start : start + used])
        try:
            tree = ast.parse(chunk)
        except (SyntaxError, ValueError):
            continue
        asserts = _asserts_in_body(tree.body)
        return (asserts[0] if len(tree.body) == 1 and len(asserts) == 1 else None), used
    words = lines[start].split()
    for keep in range(len(words) - 1, max(1, len(words) - 8), -1):  # "assert f(1) == 2 is expected"
        try:
            tree = ast.parse(" ".join(words[:keep]))
        except (SyntaxError, ValueError):
            continue
        asserts = _asserts_in_body(tree.body)
        return (asserts[0] if len(tree.body) == 1 and len(asserts) == 1 else None), 1
    return None, 1


def _doctest_example(lines: list[str], start: int) -> tuple[ast.Assert | None, int]:
    """`>>> f(1)` (with `...` continuation lines) and the expected output on the next line."""
    source = [lines[start][3:].strip()]
    i = start + 1
    while i < len(lines) and lines[i].startswith("..."):
        source.append(lines[i][3:].strip())
        i += 1
    if i >= len(lines) or not lines[i] or lines[i].startswith(">>>"):
        return None, i - start
    try:
        call = ast.parse(" ".join(source), mode="eval").body
        expected = ast.parse(lines[i], mode="eval").body
    except (SyntaxError, ValueError):
        return None, i - start + 1
    condition = ast.Compare(left=call, ops=[ast.Eq()], comparators=[expected])
    return ast.fix_missing_locations(ast.Assert(test=condition, msg=None)), i - start + 1


def _canonical(statement: ast.Assert, entry_point: str | None) -> str | None:
    """`assert CONDITION` in canonical spelling, or None for a test not worth running."""
    condition = statement.test
    if isinstance(condition, ast.Constant):
        return None  # `assert True`: tests nothing
    if entry_point and not any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point
        for node in ast.walk(condition)
    ):
        return None  # does not exercise the function under test
    try:
        source = f"assert {ast.unparse(condition)}"
        compile(source, "<generated test>", "exec")
    except (SyntaxError, ValueError, RecursionError):
        return None
    return source
