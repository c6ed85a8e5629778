"""The Sampler: rows of token prompts sampled by continuous batching, on an optional mesh.

    sampler = Sampler(config, params, SamplingConfig(...), eos_id=..., pad_id=..., slots=64)
    sampler.generate([Request(tokens, keys), ...])   # [request][sample] -> new tokens
    sampler.sample(prompts, num_samples, seed)       # the same, keys from row_keys(seed, i, j)
    sampler(prompts, keys)                           # one row per prompt (identical prompts shared)

A fixed number of slots decode in one compiled loop (`decode.generate`); whenever enough rows have
stopped, the loop returns, their tokens are read, and their slots are refilled with waiting rows
(`decode.prefill` of the next problems, then `decode.insert`), until the queue is empty. So the
slots stay busy however long each completion runs, and no step computes a finished row, apart from
the last rows of the queue.

Two levels of prefix sharing: the tokens every request of a run starts with (a few-shot block, at
least `length_bucket` of them, rounded down to a multiple of it) are prefilled once, batch 1, and
held once in the cache; each request's own prompt is prefilled once and copied into the slots of
its k samples. Consecutive requests with another shared block start another run, if they have rows
enough to fill the slots; requests sharing nothing (or too few to fill the slots) decode together
in one plain run.

Each row draws with its own key, so its tokens do not depend on its slot, its neighbours, the
number of slots or the mesh. With a mesh the parameters are placed by their logical axes and the
slots split over the `batch` rule's mesh axes; on a mesh spanning several hosts every host makes
the same calls with the same requests, and every host gets every row back.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmst_jax.models.bloom import BloomConfig
from mmst_jax.models.bloom_cache import decoding_params
from mmst_jax.sampling import decode
from mmst_jax.sampling.decode import SamplingConfig, SamplingError
from mmst_jax.sampling.stop_strings import StopStrings


@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt and the keys of its samples (one row each): tokens, keys [k]; max_new_tokens:
    the rows' own token limit (one for all, or one per sample; at most the sampler's)."""

    tokens: Sequence[int]
    keys: jax.Array
    max_new_tokens: int | Sequence[int] | None = None


def shared_prefix_length(prompts: Sequence[Sequence[int]], bucket: int = 1) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own, rounded down
    to a multiple of `bucket` (so that runs share compiled shapes)."""
    first, shortest = prompts[0], min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
        n += 1
    return n // bucket * bucket


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclasses.dataclass
class _Prefilled:
    """A prefill call's problems on device, and the rows of them not yet in a slot:
    (request, sample, source row of the prefill)."""

    kv: dict
    logits: jax.Array
    lengths: jax.Array
    rows: list[tuple[int, int, int]]


class Sampler:
    """Samples continuations of token prompts by continuous batching (see the module docstring).

    slots: rows decoding at once (rounded up to divide over the mesh). length_bucket: prompt
    lengths are padded to its multiples, so runs reuse compiled programs. max_cache_length bounds
    a row's prompt plus max_new_tokens.
    """

    def __init__(self, config: BloomConfig, params, sampling: SamplingConfig, *, eos_id: int | None,
                 pad_id: int, stop: StopStrings | None = None, mesh=None, rules=None,
                 max_cache_length: int | None = None, share_prefix: bool = True, length_bucket: int = 64,
                 slots: int = 64):
        self.config, self.sampling, self.stop = config, sampling, stop
        self.token_rules = decode.TokenRules(sampling, eos_id, pad_id)
        self.eos_id, self.pad_id = eos_id, pad_id
        self.mesh, self.max_cache_length = mesh, max_cache_length
        self.share_prefix, self.length_bucket = share_prefix, length_bucket
        self._prefix: tuple[tuple[int, ...], dict] | None = None
        self.shared_tokens = 0  # how many prompt tokens the last run shared
        self.steps = 0  # decode steps run by the last `generate` (slots x steps = computed rows)
        self._stop_table = None if stop is None else self._table(stop, config.vocab_size)
        self.row_multiple = 1
        params = decoding_params(params)
        if mesh is not None:
            from mmst_jax import sharding
            from mmst_jax.models.shardings import decoding_param_shardings

            self.rules = rules or sharding.DEFAULT_RULES
            params = sharding.place(params, decoding_param_shardings(config, mesh, self.rules))
            self._rows = sharding.logical_to_sharding(jax.sharding.PartitionSpec("batch"), mesh, self.rules)
            axes = self._rows.spec[0] if len(self._rows.spec) else None
            axes = [] if axes is None else ([axes] if isinstance(axes, str) else list(axes))
            self.row_multiple = int(np.prod([mesh.shape[a] for a in axes]))
            if self._stop_table is not None:
                self._stop_table = self._replicated(np.asarray(self._stop_table))
        self.params = params
        self.slots = _round_up(max(1, slots), self.row_multiple)

    @staticmethod
    def _table(stop: StopStrings, vocab_size: int) -> np.ndarray:
        """The stop automaton over the model's vocabulary (ids the tokenizer lacks change nothing)."""
        if stop.table.shape[1] > vocab_size:
            raise SamplingError(f"the stop strings' vocabulary has {stop.table.shape[1]} tokens, more than "
                                f"the model's {vocab_size}")
        table = stop.device_table
        if table.shape[1] < vocab_size:
            pad = np.tile(np.arange(stop.num_live + 1, dtype=np.int32)[:, None], (1, vocab_size - table.shape[1]))
            table = np.concatenate([table, pad], axis=1)
        return jnp.asarray(table)

    # ---- placing inputs -------------------------------------------------------------------
    def _context(self):
        if self.mesh is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(self.rules))
        return stack

    def _replicated(self, x: np.ndarray) -> jax.Array:
        """A host value (the same on every host) on every device of the mesh."""
        if self.mesh is None:
            return jnp.asarray(x)
        from mmst_jax import sharding

        return sharding.place(np.asarray(x), jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))

    def _split(self, x: np.ndarray) -> jax.Array:
        """A host batch (the same on every host), its rows split over the mesh."""
        if self.mesh is None:
            return jnp.asarray(x)
        from mmst_jax import sharding

        spec = jax.sharding.PartitionSpec(self._rows.spec[0], *([None] * (x.ndim - 1)))
        return sharding.place(np.asarray(x), jax.sharding.NamedSharding(self.mesh, spec))

    def _fetch(self, tree):
        if self.mesh is None:
            return jax.tree.map(np.asarray, jax.device_get(tree))
        from mmst_jax import sharding

        return sharding.gather_to_host(tree)

    # ---- the public calls -----------------------------------------------------------------
    def __call__(self, prompts: Sequence[Sequence[int]], keys: jax.Array) -> list[list[int]]:
        """Rows' new tokens (EOS dropped; a stop string's last token kept: cut its text with
        `stop.truncate`). prompts: token lists, one per row; keys [rows]: one key per row. Rows
        with the same prompt share its prefill."""
        if len(keys) != len(prompts):
            raise SamplingError(f"{len(prompts)} prompts but {len(keys)} keys: give one key per row")
        groups: dict[tuple[int, ...], list[int]] = {}
        for row, p in enumerate(prompts):
            groups.setdefault(tuple(p), []).append(row)
        rows = list(groups.values())
        out = self.generate([Request(prompts[r[0]], keys[np.asarray(r)]) for r in rows])
        result: list[list[int]] = [[] for _ in prompts]
        for members, samples in zip(rows, out):
            for row, tokens in zip(members, samples):
                result[row] = tokens
        return result

    def sample(self, prompts: Sequence[Sequence[int]], num_samples: int, seed: int,
               first_index: int = 0) -> list[list[list[int]]]:
        """`num_samples` continuations of each prompt, [prompt][sample] -> tokens. Prompt i
        draws with row_keys(seed, first_index + i, sample)."""
        if num_samples < 1:
            raise SamplingError(f"num_samples must be >= 1, got {num_samples}")
        requests = [Request(p, decode.row_keys(seed, [first_index + i] * num_samples, range(num_samples)))
                    for i, p in enumerate(prompts)]
        return self.generate(requests)

    def generate(self, requests: Sequence[Request],
                 on_done: Callable[[int, list[list[int]]], None] | None = None) -> list[list[list[int]]]:
        """Every request's samples, [request][sample] -> new tokens (EOS dropped). on_done(i,
        samples) is called as soon as request i's samples have all stopped."""
        if not len(requests):
            raise SamplingError("no prompts to sample from")
        if any(len(r.tokens) == 0 for r in requests):
            raise SamplingError("a prompt is empty: every prompt needs at least one token")
        steps = self.sampling.max_new_tokens
        longest = max(len(r.tokens) for r in requests)
        if self.max_cache_length is not None and longest + steps > self.max_cache_length:
            raise SamplingError(
                f"a prompt of {longest} tokens plus max_new_tokens={steps} needs {longest + steps} cache "
                f"slots but the cache holds {self.max_cache_length}: shorten the prompt, lower "
                "max_new_tokens or raise max_cache_length")
        results: list[list[list[int] | None]] = [[None] * len(r.keys) for r in requests]
        self._key_data = [np.asarray(jax.random.key_data(r.keys)) for r in requests]
        self.steps = 0
        for start, stop, shared in self._runs(requests):
            self._run(requests, range(start, stop), shared, results, on_done)
        return results  # type: ignore[return-value]

    # ---- scheduling -----------------------------------------------------------------------
    def _runs(self, requests: Sequence[Request]) -> list[tuple[int, int, int]]:
        """The runs of continuous batching: (start, stop, shared tokens) of consecutive requests.

        Consecutive requests sharing a prefix of at least `length_bucket` tokens form a run that
        prefills it once, if their rows fill the slots at least once (or they are all there is);
        every other request joins the plain run (nothing shared) of its neighbours, so requests
        without a common prefix decode side by side instead of a run each.
        """
        if not self.share_prefix:
            return [(0, len(requests), 0)]
        groups, start, shared = [], 0, None  # consecutive requests sharing a prefix (alone: 0)
        for i in range(1, len(requests) + 1):
            if i < len(requests):
                common = shared_prefix_length([requests[start].tokens, requests[i].tokens], self.length_bucket)
                if common >= self.length_bucket and (shared is None or 2 * common >= shared):
                    shared = common if shared is None else min(shared, common)
                    continue
            groups.append((start, i, shared or 0))
            start, shared = i, None
        if len(groups) == 1:
            return groups
        runs: list[tuple[int, int, int]] = []
        for start, stop, shared in groups:
            if sum(len(requests[i].keys) for i in range(start, stop)) < self.slots:
                shared = 0  # too few rows to fill a run of their own
            if runs and not shared and not runs[-1][2]:
                runs[-1] = (runs[-1][0], stop, 0)
            else:
                runs.append((start, stop, shared))
        return runs

    def _run(self, requests: Sequence[Request], members: range, shared: int, results, on_done) -> None:
        """One run of continuous batching over requests `members`, after their shared prefix."""
        self.shared_tokens = shared
        prefix = self._prefix_cache(tuple(requests[members[0]].tokens[:shared])) if shared else None
        width = _round_up(max(len(requests[i].tokens) - shared for i in members), self.length_bucket)
        steps = self.sampling.max_new_tokens
        if self.max_cache_length is not None:
            width = max(min(width, self.max_cache_length - shared - steps),
                        max(len(requests[i].tokens) - shared for i in members))
        queue = [(i, j) for i in members for j in range(len(requests[i].keys))]
        per_call = max(self.row_multiple, _round_up(max(1, self.slots // 8), self.row_multiple))
        refill = max(1, self.slots // 16)  # return to refill once this many slots are free
        with self._context():
            state = decode.empty_slots(prefix, config=self.config, slots=self.slots, cache_length=width + steps,
                                       max_new_tokens=steps)
            free, occupant = list(range(self.slots)), [None] * self.slots
            waiting = list(reversed(queue))  # popped from the end, in queue order
            prefilled: _Prefilled | None = None
            left = {i: len(requests[i].keys) for i in members}
            while True:
                while free and (waiting or (prefilled and prefilled.rows)):
                    if prefilled is None or not prefilled.rows:
                        prefilled = self._prefill(requests, waiting, per_call, shared, width, prefix)
                    take, prefilled.rows = prefilled.rows[:len(free)], prefilled.rows[len(free):]
                    slots, free = free[:len(take)], free[len(take):]
                    for at in range(0, len(take), refill):
                        state = self._insert(state, prefilled, take[at:at + refill], slots[at:at + refill],
                                             requests, refill)
                    for slot, (i, j, _) in zip(slots, take):
                        occupant[slot] = (i, j)
                if all(o is None for o in occupant):
                    break
                backlog = len(waiting) + (len(prefilled.rows) if prefilled else 0)
                want = self.slots if not backlog else min(refill, backlog)
                state = decode.generate(self.params, state, self._replicated(np.int32(want)), config=self.config,
                                        rules=self.token_rules, stop_table=self._stop_table)
                done, count, tokens = self._fetch((state.done, state.count, state.tokens))
                for slot, who in enumerate(occupant):
                    if who is None or not done[slot]:
                        continue
                    i, j = who
                    row = tokens[slot, :count[slot]].tolist()
                    if row and row[-1] == self.eos_id:
                        row = row[:-1]
                    results[i][j] = row
                    occupant[slot] = None
                    free.append(slot)
                    left[i] -= 1
                    if not left[i] and on_done is not None:
                        on_done(i, results[i])
                free.sort()
            self.steps += int(self._fetch(state.steps))

    def _prefill(self, requests, waiting: list, per_call: int, shared: int, width: int, prefix) -> _Prefilled:
        """Prefills the next `per_call` problems of the queue (each once for all its rows)."""
        chosen: list[int] = []
        rows: list[tuple[int, int, int]] = []
        while waiting and (len(chosen) < per_call or waiting[-1][0] == chosen[-1]):
            i, j = waiting.pop()
            if not chosen or chosen[-1] != i:
                if len(chosen) == per_call:
                    waiting.append((i, j))
                    break
                chosen.append(i)
            rows.append((i, j, len(chosen) - 1))
        ids = np.full((per_call, width), self.pad_id, np.int32)
        lengths = np.ones((per_call,), np.int32)
        for n, i in enumerate(chosen):
            own = list(requests[i].tokens[shared:])
            ids[n, :len(own)] = own
            lengths[n] = len(own)
        kv, logits = decode.prefill(self.params, prefix, self._split(ids), self._split(lengths), config=self.config)
        return _Prefilled(kv, logits, self._split(lengths), rows)

    def _insert(self, state, prefilled: _Prefilled, take, slots: list[int], requests, width: int):
        """Inserts rows `take` (at most `width`) of `prefilled` into `slots`: one call of a fixed
        width, so that an insert copies a few rows' keys/values, not every slot's."""
        n = self.slots
        slot_ids = np.full((width,), n, np.int32)  # n: no row
        sources = np.zeros((width,), np.int32)
        keys = np.zeros((width, *decode.KEY_SHAPE), np.uint32)
        limits = np.ones((width,), np.int32)
        for f, (slot, (i, j, source)) in enumerate(zip(slots, take)):
            r = requests[i]
            slot_ids[f], sources[f] = slot, source
            keys[f] = self._key_data[i][j]
            limit = r.max_new_tokens if r.max_new_tokens is None or isinstance(r.max_new_tokens, int) \
                else r.max_new_tokens[j]
            limits[f] = min(limit or self.sampling.max_new_tokens, self.sampling.max_new_tokens)
        return decode.insert(state, prefilled.kv, prefilled.logits, prefilled.lengths, *map(
            self._replicated, (slot_ids, sources, keys, limits)), rules=self.token_rules,
            stop_table=self._stop_table)

    def _prefix_cache(self, prefix: tuple[int, ...]) -> dict:
        """The shared prefix's keys/values (the last one is kept while the next run shares it)."""
        if self._prefix is None or self._prefix[0] != prefix:  # batch 1: not split over the mesh
            ids = self._replicated(np.asarray([prefix], np.int32))
            self._prefix = (prefix, decode.prefill_prefix(self.params, ids, config=self.config))
        return self._prefix[1]
