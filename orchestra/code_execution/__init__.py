"""Running model-written code: the sandbox, the programs run in it, and the tests run against them.

- `sandbox`: one untrusted Python program in a fresh, limited interpreter;
- `program`: the code a candidate holds, and the program that tests it against
  a code problem (the function stub first, then the candidate, then the tests);
- `assert_runner`: one program against many assert statements, a verdict each;
- `generated_tests`: assert statements read out of a model's reply or a docstring.

The HumanEval task scores with it, and the code techniques (`unit_test_generate`,
`unit_test_evaluate`, the `execution` scorer) choose candidates with it; it
imports neither, so the core can run code without knowing any technique.
"""
