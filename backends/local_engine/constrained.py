"""Constrained decoding: only tokens that keep the text inside a JSON schema may be sampled.

The engine asks a sequence's `TokenConstraint` for the tokens allowed next,
masks the others out of its logits before sampling, and tells it the token
chosen; once the JSON is complete only EOS is allowed. The grammar work is
xgrammar's (the library vLLM and SGLang use): it was the cheaper of the two
well-kept candidates per token in bench/constrained_decoding.py (llguidance the
other). JSON is generated compactly (no free whitespace, "," and ":" without
spaces), so a small model cannot pad its reply with whitespace until it runs
out of tokens.

A compiled schema is cached per engine (compiling takes milliseconds, a
request's samples share it); a matcher is per sequence. xgrammar is an extra
(`orchestra[structured]`): it pulls in triton, which a first run does not need.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import torch


class ConstraintCompiler:
    """Compiles JSON schemas against one tokenizer's vocabulary."""

    def __init__(self, tokenizer, vocab_size: int, eos_ids: set[int]):
        try:
            import xgrammar
        except ImportError:
            raise ValueError(
                "response_format and forced tool calls on the local engine need xgrammar: "
                "pip install 'orchestra[structured]'"
            ) from None

        self._xgrammar = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(eos_ids))
        self._compiler = xgrammar.GrammarCompiler(info)
        self.vocab_size = vocab_size
        self._compiled = lru_cache(maxsize=64)(self._compile)

    def _compile(self, schema_json: str):
        return self._compiler.compile_json_schema(schema_json, any_whitespace=False, separators=(",", ":"))

    def constraint(self, schema: dict[str, Any]) -> TokenConstraint:
        """A fresh matcher for one sequence (ValueError: a schema xgrammar cannot compile)."""
        try:
            compiled = self._compiled(json.dumps(schema))  # key order kept: it is the order properties are written in
        except Exception as err:  # xgrammar raises its own types (and RuntimeError) for bad schemas
            raise ValueError(f"cannot constrain decoding to this JSON schema: {err}") from None
        return TokenConstraint(self._xgrammar, compiled, self.vocab_size)


class TokenConstraint:
    """One sequence's position in its grammar."""

    def __init__(self, xgrammar, compiled, vocab_size: int):
        self._xgrammar = xgrammar
        self._matcher = xgrammar.GrammarMatcher(compiled)
        self._bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens not allowed next to -inf (`logits`: one row, in place)."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        row = logits[None, :] if logits.dim() == 1 else logits
        if row.device.type == "cpu" and row.dtype == torch.float32:
            self._xgrammar.apply_token_bitmask_inplace(row, self._bitmask)
        else:  # the bitmask is applied on the CPU, the row returned where it was
            masked = row.float().cpu()
            self._xgrammar.apply_token_bitmask_inplace(masked, self._bitmask)
            row.copy_(masked.to(row.dtype))

    def accept(self, token: int) -> None:
        """The token chosen (always one `mask` allowed; EOS once the JSON is complete)."""
        self._matcher.accept_token(token)
