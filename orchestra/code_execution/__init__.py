"""Running model-written code: the sandbox, the programs run in it, and the tests run against them.

- `sandbox`: one untrusted Python program in a fresh, limited interpreter (as root:
  with no network and a private, size-capped filesystem);
- `verdict_channel`: how a harness reports verdicts the code it runs cannot fake;
- `check_runner`: a problem's own `check(candidate)` against a candidate (HumanEval),
  the candidate in a process of its own;
- `program`: the code a candidate holds, and the program that tests it against
  a code problem (the function stub first, then the candidate, then the tests);
- `assert_runner`: one program against many assert statements, a verdict each;
- `generated_tests`: assert statements read out of a model's reply or a docstring.

The HumanEval task scores with it, and the code techniques (`unit_test_generate`,
`unit_test_evaluate`, the `execution` scorer) choose candidates with it; it
imports neither, so the core can run code without knowing any technique.
"""
