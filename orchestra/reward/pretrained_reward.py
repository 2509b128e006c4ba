"""Off-the-shelf reward models, loaded from a local Hugging Face folder and run on the local device.

Trained reward models are published in a few formats; the folder's
`config.json` (its first architecture) says which, and the option `format`
overrides it:

- `sequence_classification` (`*ForSequenceClassification`, one label): an
  outcome reward model. The problem (user) and the reply (assistant) go
  through the model's chat template; the score is sigmoid(logit). Skywork-Reward
  and Skywork-Reward-V2, and other Bradley-Terry reward models on the same head.
- `token_head` (`*ForTokenClassification`, `*ForProcessRewardModel`, two
  classes per token): a process reward model. The steps are joined by a
  separator token (`<extra_0>`), each step's score is P(class 1) at its
  separator. Qwen2.5-Math-PRM-7B/72B (its own model code: `trust_remote_code`).
- `token_logits` (`*ForCausalLM`): a process reward model read from the
  language-model head. Each step ends with a step tag (` ки`), each step's score
  is P(good) / (P(good) + P(bad)) between the tokens `+` and `-` predicted at its
  tag. Math-Shepherd (math-shepherd-mistral-7b-prm).

Requests from concurrent callers are gathered into padded batches
(`GatheredBatches`), so a search scoring its particles at once makes one
forward pass per batch. Nothing is downloaded: the folder must hold the model
and its tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestra.reward.gathered_batches import GatheredBatches

Format = Literal["sequence_classification", "token_head", "token_logits"]
OUTCOME_FORMATS: tuple[Format, ...] = ("sequence_classification",)

#: What each process format joins steps with, and the system prompt it was trained under.
_SEPARATORS: dict[Format, str] = {"token_head": "<extra_0>", "token_logits": "ки"}
_QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class RewardModelOptions(BaseModel):
    """How to read a reward model folder; every field has a default that fits the public models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Format | None = Field(default=None, description="Default: from config.json's architecture.")
    separator: str | None = Field(default=None, description="Step separator (process formats).")
    good: str = Field(default="+", description="`token_logits`: the token that means a correct step.")
    bad: str = Field(default="-", description="`token_logits`: the token that means a wrong step.")
    chat: bool | None = Field(default=None, description="Render through the chat template (default: all but token_logits).")
    system: str | None = Field(default=None, description="System prompt (default: Qwen's for token_head).")
    device: str | None = Field(default=None, description="Default: cuda when there is one, else cpu.")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(default=None, description="Default: bfloat16 on cuda, float32 on cpu.")
    batch_size: int = Field(default=8, ge=1)
    trust_remote_code: bool = Field(default=False, description="Run the folder's own model code (Qwen2.5-Math-PRM needs it).")


def parse_options(options: dict[str, Any], where: str) -> RewardModelOptions:
    """Options from a recipe, with one clear line for a mistake."""
    try:
        return RewardModelOptions.model_validate(options)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in error.errors())
        raise ValueError(f"{where}: {problems}") from None


def detect_format(config: dict[str, Any], folder: Path) -> Format:
    """The format a folder's config.json names through its first architecture."""
    architecture = (config.get("architectures") or [""])[0]
    if architecture.endswith("ForSequenceClassification"):
        return "sequence_classification"
    if architecture.endswith(("ForTokenClassification", "ForProcessRewardModel")):
        return "token_head"
    if architecture.endswith("ForCausalLM"):
        return "token_logits"
    raise ValueError(
        f"reward model {folder}: architecture {architecture or '(none)'} is not a known reward model format; "
        "set options.format to sequence_classification, token_head or token_logits"
    )


@dataclass(frozen=True)
class _Request:
    problem: str
    #: The reply (outcome formats) or its steps (process formats).
    parts: tuple[str, ...]


class PretrainedReward:
    """A reward model folder, loaded once: `outcome(problem, reply)` or `steps(problem, steps)`."""

    def __init__(self, folder: Path, options: RewardModelOptions) -> None:
        import torch
        import transformers
        from transformers import AutoTokenizer

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"reward model {folder}: not a Hugging Face model folder (no config.json)")
        config = json.loads(config_file.read_text())
        self.folder, self.options = folder, options
        self.format: Format = options.format or detect_format(config, folder)
        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = options.dtype or ("bfloat16" if self.device.type == "cuda" else "float32")
        if "AutoModel" in config.get("auto_map", {}) and not options.trust_remote_code:
            raise ValueError(
                f"reward model {folder} ships its own model code (auto_map); set options.trust_remote_code: true "
                "to run it"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=options.trust_remote_code)
        self.model = self._load_model(config, getattr(torch, dtype)).to(self.device).eval()
        self.chat = options.chat if options.chat is not None else self.format != "token_logits"
        if self.chat and not self.tokenizer.chat_template:
            raise ValueError(f"reward model {folder}: the tokenizer has no chat template; set options.chat: false")
        self.system = options.system if options.system is not None else (
            _QWEN_PRM_SYSTEM if self.format == "token_head" else None
        )
        self.separator = options.separator or _SEPARATORS.get(self.format)
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._check_tokens()
        self._batches: GatheredBatches[_Request, list[float]] = GatheredBatches(self._run, options.batch_size)

    @property
    def is_outcome(self) -> bool:
        return self.format in OUTCOME_FORMATS

    def _load_model(self, config: dict[str, Any], dtype: Any) -> Any:
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
        from transformers import AutoModelForTokenClassification

        kwargs = {"dtype": dtype, "trust_remote_code": self.options.trust_remote_code}
        labels = AutoConfig.from_pretrained(self.folder, trust_remote_code=self.options.trust_remote_code).num_labels
        if self.format == "sequence_classification":
            if labels != 1:
                raise ValueError(
                    f"reward model {self.folder}: a sequence-classification reward model has one output (a reward), "
                    f"this one has {labels} labels"
                )
            return AutoModelForSequenceClassification.from_pretrained(self.folder, **kwargs)
        if self.format == "token_head":
            if "AutoModel" in config.get("auto_map", {}):
                return AutoModel.from_pretrained(self.folder, **kwargs)  # its head is checked at the first batch
            if labels != 2:
                raise ValueError(
                    f"reward model {self.folder}: a token-head process reward model has two classes "
                    f"(wrong, right) per token, this one has {labels}"
                )
            return AutoModelForTokenClassification.from_pretrained(self.folder, **kwargs)
        return AutoModelForCausalLM.from_pretrained(self.folder, **kwargs)

    def _single_token(self, text: str, what: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids or self.tokenizer.unk_token_id in ids:
            raise ValueError(f"reward model {self.folder}: the {what} {text!r} is not in its vocabulary")
        return ids[-1]

    def _check_tokens(self) -> None:
        if self.is_outcome:
            return
        self._separator_id = self._single_token(self.separator, "step separator")
        if self.format == "token_logits":
            ids = self.tokenizer.encode(f"{self.options.good} {self.options.bad}", add_special_tokens=False)
            if len(ids) != 2 or self.tokenizer.unk_token_id in ids:
                raise ValueError(
                    f"reward model {self.folder}: the good and bad tokens {self.options.good!r}, "
                    f"{self.options.bad!r} must be one vocabulary token each"
                )
            self._good_bad = ids

    async def outcome(self, problem: str, reply: str) -> float:
        """sigmoid(reward) for `reply` to `problem`."""
        if not self.is_outcome:
            raise ValueError(f"reward model {self.folder} scores steps ({self.format}); use it as a process reward model")
        return (await self._batches.submit(_Request(problem, (reply,))))[0]

    async def steps(self, problem: str, steps: Sequence[str]) -> list[float]:
        """One score in [0, 1] per step of a partial solution."""
        if self.is_outcome:
            raise ValueError(f"reward model {self.folder} scores whole replies ({self.format}); use it as a scorer")
        if not steps:
            return []
        return await self._batches.submit(_Request(problem, tuple(steps)))

    def text(self, request: _Request) -> str:
        """What the model reads for a request, rendered as the format was trained."""
        if self.is_outcome:
            reply = request.parts[0]
        elif self.chat:
            reply = "".join(f"{step.strip()}{self.separator}" for step in request.parts)
        else:
            reply = "\n".join(f"{step.strip()} {self.separator}" for step in request.parts)
        if not self.chat:
            return f"{request.problem} {reply}"
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages += [{"role": "user", "content": request.problem}, {"role": "assistant", "content": reply}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def _run(self, requests: Sequence[_Request]) -> list[list[float]]:
        """One padded forward pass over `requests` (in a worker thread)."""
        import torch

        encoded = [self.tokenizer(self.text(r), add_special_tokens=not self.chat)["input_ids"] for r in requests]
        if self.is_outcome and self.model.config.pad_token_id is None and len(encoded) > 1:
            # transformers finds the last token of a padded row by its pad id; without one, one row at a time
            return [row for r in requests for row in self._run([r])]
        pad = self.model.config.pad_token_id if self.is_outcome else self._pad
        width = max(len(ids) for ids in encoded)
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in encoded], device=self.device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in encoded], device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask)
        logits = (out.logits if hasattr(out, "logits") else out[0]).float()
        if self.is_outcome:
            return [[float(torch.sigmoid(row[0]))] for row in logits]
        return [self._step_scores(logits[i, : len(row)], row, r) for i, (row, r) in enumerate(zip(encoded, requests))]

    def _step_scores(self, logits: Any, ids: list[int], request: _Request) -> list[float]:
        import torch

        positions = [i for i, token in enumerate(ids) if token == self._separator_id]
        if len(positions) != len(request.parts):
            raise ValueError(
                f"reward model {self.folder}: found {len(positions)} step separators ({self.separator!r}) "
                f"for {len(request.parts)} steps; a step's text must not contain the separator"
            )
        at = logits[positions]
        if self.format == "token_logits":
            return torch.softmax(at[:, self._good_bad], dim=-1)[:, 0].tolist()
        if at.shape[-1] != 2:
            raise ValueError(f"reward model {self.folder}: a token head must give 2 classes, got {at.shape[-1]}")
        return torch.softmax(at, dim=-1)[:, 1].tolist()


#: Loaded reward models by (folder, its config's modification time, options).
_LOADED: dict[tuple[str, float, str], PretrainedReward] = {}


def load_reward_model(path: str | Path, options: RewardModelOptions = RewardModelOptions()) -> PretrainedReward:
    """The reward model in `path` (a local folder), loaded once per folder version and options."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"reward model folder {path} not found (resolved to {folder})")
    config = folder / "config.json"
    key = (str(folder), config.stat().st_mtime if config.exists() else 0.0, options.model_dump_json())
    if key not in _LOADED:
        _LOADED[key] = PretrainedReward(folder, options)
    return _LOADED[key]
