"""The scheduler without a model: the plans it makes, and what `update_from_output` does with
sampled tokens — admission, shared prefills, prefix reuse, chunked prefill, finishing, preemption,
failure.

A round either admits and prefills, or decodes; a prefill round is always followed by a
decode round of everyone running, the newcomers included (one engine step)."""

from __future__ import annotations

import random

import torch

from orchestra.backends.local_engine.config import EngineConfig
from orchestra.backends.local_engine.kv_pool import KVPool, KVPoolFull
from orchestra.backends.local_engine.prefix_cache import PrefixCache
from orchestra.backends.local_engine.sampling import SamplingParams
from orchestra.backends.local_engine.scheduler import Sampled, Scheduler
from orchestra.backends.local_engine.sequence import Sequence
from orchestra.backends.local_engine.stopping import StopChecker

EOS = 0
TOKEN_BYTES = 16  # 1 layer x (key, value) x 1 head x 2 dims x 4 bytes


class _Tokenizer:
    def decode(self, tokens, skip_special_tokens=True):
        return " ".join(str(t) for t in tokens)


def scheduler(kv_tokens: int = 1024, lookahead: int = 0, **config) -> Scheduler:
    pool = KVPool(layers=1, kv_heads=1, head_dim=2, dtype=torch.float32, device=torch.device("cpu"),
                  byte_limit=kv_tokens * TOKEN_BYTES, length_step=4)
    stops = StopChecker(_Tokenizer(), {EOS})
    return Scheduler(EngineConfig(**config), pool, PrefixCache(1 << 20), stops, lookahead)


def sequence(prompt: tuple[int, ...], max_tokens: int = 8) -> Sequence:
    return Sequence(prompt_ids=prompt, params=SamplingParams(max_tokens=max_tokens), stream=random.Random(0),
                    limit=max_tokens)


def run(s: Scheduler, plan, token: int = 7):
    """What the engine would do: one token for every sequence of the plan (a prefill piece samples none)."""
    everyone = [*plan.decode, *(q for p in plan.prefills if not p.partial for q in p.sequences)]
    return s.update_from_output(plan, {q: Sampled([token], [0.0]) for q in everyone})


def test_admitted_sequences_prefill_once_per_context_then_decode_at_once_in_slot_order():
    s = scheduler()
    a, b, c = sequence((1, 2, 3)), sequence((1, 2, 3)), sequence((4, 5))
    s.add([a, b, c])
    plan = s.schedule()
    assert plan.decode == [] and [p.sequences for p in plan.prefills] == [(a, b), (c,)]
    assert [(q.slot) for q in (a, c, b)] == [0, 1, 2]  # leaders first, then followers
    assert [p.row.tokens for p in plan.prefills] == [(1, 2, 3), (4, 5)] and plan.computed_tokens == 5
    assert plan.reused_tokens == 3  # b copies a's KV
    assert run(s, plan) == []
    assert all(q.tokens == [7] and q.kv_length == len(q.context) - 1 for q in (a, b, c))
    assert s.prefix_cache.match((1, 2, 3)).length == 3  # the prefilled context went to the cache
    s.add([sequence((6,))])  # arrives meanwhile: joins in the next step, not in this decode round
    plan = s.schedule()
    assert plan.decode == [a, c, b] and plan.prefills == []


def test_a_repeated_prompt_computes_only_its_last_token():
    s = scheduler()
    first = sequence((1, 2, 3, 4), max_tokens=1)
    s.add([first])
    plan = s.schedule()
    s.pool.storage[:, :, first.slot] = 5.0  # what its prefill would have computed
    assert [q for q, _ in run(s, plan)] == [first]  # max_tokens=1: done after the prefill
    assert s.schedule().decode == []  # the step's decode round: nobody left
    again = sequence((1, 2, 3, 4))
    s.add([again])
    plan = s.schedule()
    (prefill,) = plan.prefills
    assert prefill.row.start == 3 and prefill.row.tokens == (4,) and again.computed_prompt_tokens == 1
    cached = s.pool.storage[:, :, again.slot, :, :4]
    assert bool((cached[..., :3, :] == 5.0).all()) and bool((cached[..., 3, :] == 0.0).all())  # copied in
    run(s, plan)
    run(s, s.schedule())
    whole = sequence((1, 2, 3, 4))
    s.add([whole])
    (prefill,) = s.schedule(prefix_reuse=False).prefills  # an MLP plugin that must see every token
    assert prefill.row.start == 0


def test_finished_sequences_leave_and_the_last_row_fills_the_hole():
    s = scheduler()
    a, b, c = sequence((1,)), sequence((2,)), sequence((3,))
    s.add([a, b, c])
    run(s, s.schedule())
    s.pool.storage[:, :, 2] = 3.0  # c's KV
    plan = s.schedule()
    finished = s.update_from_output(plan, {a: Sampled([EOS], [0.0]), b: Sampled([5], [0.0]), c: Sampled([6], [0.0])})
    assert [(q, f.reason) for q, f in finished] == [(a, "stop")]
    assert s.running == [c, b] and (c.slot, b.slot, a.slot) == (0, 1, -1)
    assert bool((s.pool.storage[:, :, 0, :, : c.kv_length] == 3.0).all())  # c's KV moved with it


def test_memory_pressure_preempts_the_newest_and_it_resumes_first():
    s = scheduler(kv_tokens=16)  # two rows of 8 positions
    old, new = sequence((1, 2, 3), max_tokens=20), sequence((4, 5, 6), max_tokens=20)
    s.add([old])
    run(s, s.schedule())
    s.add([new])
    while not (plan := s.schedule()).preempted:
        run(s, plan)
    assert plan.preempted == [new] and plan.decode == [old]
    assert list(s.waiting) == [new] and new.kv_length == 0 and new.slot == -1
    assert s.prefix_cache.match(new.context).length > 0  # its KV waits in the prefix cache


def test_a_sequence_that_cannot_fit_alone_fails():
    s = scheduler(kv_tokens=8)
    s.add([sequence(tuple(range(1, 30)))])
    plan = s.schedule()
    (failed, error), = plan.failed
    assert isinstance(error, KVPoolFull) and "kv_cache_bytes" in str(error) and s.idle


def test_lookahead_is_reserved_only_for_a_lone_sequence_with_nobody_waiting():
    s = scheduler(lookahead=5, max_batch_size=1)
    a, b = sequence((1, 2)), sequence((3, 4))
    s.add([a, b])
    run(s, s.schedule())
    plan = s.schedule()
    assert plan.lookahead == 0  # b waits for a row
    run(s, plan)
    b.future.cancel()
    plan = s.schedule()
    assert plan.lookahead == 5 and s.pool.length >= a.kv_length + 5
    s.update_from_output(plan, {a: Sampled([8, 9, EOS, 10], [0.0] * 4)})  # a speculative round: stops at EOS
    assert a.tokens[-3:] == [8, 9, EOS] and s.idle


def test_abort_returns_everyone():
    s = scheduler()
    a, b = sequence((1,)), sequence((2,))
    s.add([a])
    run(s, s.schedule())
    s.add([b])
    assert set(s.abort()) == {a, b} and s.idle and a.slot == -1


def one_decoding(**config) -> tuple[Scheduler, Sequence]:
    """A scheduler whose one running sequence is past its prefill and first decode round."""
    s = scheduler(**config)
    short = sequence((1, 2), max_tokens=20)
    s.add([short])
    run(s, s.schedule())
    run(s, s.schedule())
    return s, short


def test_a_long_prompt_arriving_while_others_decode_is_prefilled_in_pieces_between_their_tokens():
    s, short = one_decoding(prefill_tokens=4)
    prompt = tuple(range(10, 20))  # 10 tokens: pieces of 4, 4, then the last 2 with the first token
    long, twin = sequence(prompt), sequence(prompt)
    s.add([long, twin])
    starts = []
    while not long.prefilled:
        plan = s.schedule()
        (prefill,) = plan.prefills
        assert prefill.sequences == (long, twin) and len(prefill.row.tokens) <= 4
        starts.append((prefill.row.start, prefill.partial, plan.reused_tokens))
        run(s, plan)
        if prefill.partial:  # parked: back at the front of the queue, its piece in the prefix cache
            assert list(s.waiting) == [long, twin] and s.running == [short] and long.slot == -1
            assert s.prefix_cache.match(prompt).length == prefill.row.start + len(prefill.row.tokens)
        plan = s.schedule()
        assert plan.decode == s.running and short in plan.decode  # short decodes between the pieces
        run(s, plan)
    assert starts == [(0, True, 0), (4, True, 0), (8, False, 10)]  # own pieces are not reuse; twin copies 10
    assert long.computed_prompt_tokens == 10 and long.tokens[0] == 7 and twin.tokens[0] == 7
    assert long.kv_length == twin.kv_length == 11


def test_a_long_prompt_with_nobody_decoding_is_prefilled_at_once():
    s = scheduler(prefill_tokens=4)
    long = sequence(tuple(range(10, 20)))
    s.add([long])
    (prefill,) = s.schedule().prefills
    assert not prefill.partial and len(prefill.row.tokens) == 10


def test_once_the_cache_evicts_a_parked_piece_the_rest_is_prefilled_at_once():
    s, _ = one_decoding(prefill_tokens=4)
    long = sequence(tuple(range(10, 20)))
    s.add([long])
    plan = s.schedule()
    assert plan.prefills[0].partial
    run(s, plan)
    run(s, s.schedule())
    s.prefix_cache.clear()  # memory pressure took the parked piece
    (prefill,) = s.schedule().prefills
    assert not prefill.partial and prefill.row.start == 0 and len(prefill.row.tokens) == 10
