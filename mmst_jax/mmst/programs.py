"""The programs of an MMST run, described once from its settings, and the checks they must pass.

`mmst run` executes these programs and `mmst plan` compiles them; both build them here, from the
same settings, so the plan is the run's:

    programs = describe(Settings(model=..., config=..., finetune=..., mesh_shape=..., rules=...), prompts)
    check(programs)        # ProgramError naming every setting that would fail later, and its fix

A round runs one fine-tuning program (the base model trained from scratch runs a second one,
`bootstrap`) and four decode programs: `sample` (the training problems), `translate` (verified
solutions rewritten as the other method), `eval_greedy` and `eval_vote` (the test and related
problems). A decode program is the sampler's loop over `slots` rows, each with a KV cache of
`cache_length` columns in the policy's cache dtype; its cache length is that of the longest real
prompt the program samples (rounded up to `length_bucket`) plus `max_new_tokens`, or the prompt
budget where the prompts are not known yet (translations, and every prompt before the run's
tokenizer exists).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from mmst_jax.mmst.config import RunConfig
from mmst_jax.mmst.problems import Problems
from mmst_jax.mmst.stages import select_by_dataset
from mmst_jax.models.bloom import BloomConfig
from mmst_jax.records import METHODS, DIRECTIONS
from mmst_jax.sharding import MESH_AXES, mesh_axes_of_logical


class ProgramError(ValueError):
    """A configuration whose programs cannot run; the message names each setting and its fix."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the programs are built from: the model (an architecture; the run's policy is applied
    here), the run's settings, the fine-tuning TrainConfig of every round (and of the bootstrap
    training, when the base model is trained from scratch), the mesh and its rules, the hosts, and
    the tokenizer's size (None: not known yet)."""

    model: BloomConfig
    config: RunConfig
    finetune: Any  # training.TrainConfig
    mesh_shape: Mapping[str, int]
    rules: Sequence[tuple[str, Any]]
    bootstrap: Any = None  # training.TrainConfig of the base model trained from scratch
    hosts: int = 1
    tokenizer_size: int | None = None
    tokenizer: str = "the tokenizer"


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """One fine-tuning step: `train.batch_size` rows of `length` tokens (packed), in
    `train.micro_batches` micro-batches, under the model's dtype and remat policy."""

    name: str  # finetune | bootstrap
    setting: str  # the gin scope its TrainConfig is bound in
    model: BloomConfig
    train: Any  # training.TrainConfig
    length: int

    @property
    def tokens(self) -> int:
        return self.train.num_steps * self.train.batch_size * self.length


@dataclasses.dataclass(frozen=True)
class DecodeProgram:
    """The sampler's loop for one kind of prompt: `slots` rows against caches of `cache_length`
    columns. `longest_prompt` is the longest real prompt (None: bounded by the budget); `rows`
    and `prompt_tokens` are what a round decodes with it (None: not known before the round)."""

    name: str  # sample | translate | eval_greedy | eval_vote
    model: BloomConfig
    slots: int
    cache_length: int
    max_new_tokens: int
    longest_prompt: int | None
    rows: int | None
    prompt_tokens: int | None  # prefilled once per problem (its samples share it)
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0


@dataclasses.dataclass(frozen=True)
class RunPrograms:
    settings: Settings
    train: tuple[TrainProgram, ...]
    decode: tuple[DecodeProgram, ...]

    def __iter__(self):
        return iter(self.train + self.decode)


def base_model(base, *, strict: bool = True) -> tuple[BloomConfig, str]:
    """The base model's architecture (an mmst.Base) and where it was read: the HF checkpoint's
    config.json, else the preset (with its overrides). Not `strict` (planning away from the
    checkpoint), a checkpoint that is not at hand is described by the preset."""
    from etils import epath

    from mmst_jax.models.orbax import read_config

    if base.hf_checkpoint is not None and (strict or (epath.Path(base.hf_checkpoint) / "config.json").exists()):
        return read_config(base.hf_checkpoint), f"{base.hf_checkpoint}/config.json"
    return BloomConfig.preset(base.model_preset, **dict(base.model_overrides)), f"preset {base.model_preset!r}"


def base_tokenizer(base):
    """The tokenizer.json that comes with the base model (None: trained in round 0, or absent)."""
    from etils import epath

    source = base.tokenizer or base.hf_checkpoint
    if source is None:
        return None
    source = epath.Path(source)
    source = source / "tokenizer.json" if source.is_dir() else source
    return source if source.exists() else None


def settings_for(*, base, config: RunConfig, finetune, mesh_shape: Mapping[str, int], rules, hosts: int = 1,
                 tokenizer=None, strict: bool = True) -> Settings:
    """The Settings of a run from its gin-built objects (what `mmst run` and `mmst plan` both call):
    the base model's architecture, the fine-tuning of every round (and of the base model when it is
    trained from scratch), the mesh, and the tokenizer (a tokenizer.json path, or None)."""
    from mmst_jax.vocab import HFTokenizerVocabulary

    model, _ = base_model(base, strict=strict)
    size = None if tokenizer is None else HFTokenizerVocabulary(str(tokenizer)).vocab_size
    return Settings(model=model, config=config, finetune=finetune, mesh_shape=dict(mesh_shape), rules=rules,
                    bootstrap=base.train if base.hf_checkpoint is None else None, hosts=hosts,
                    tokenizer_size=size, tokenizer=f"tokenizer {tokenizer}")


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def describe(settings: Settings, prompts: Problems | None = None) -> RunPrograms:
    """The run's programs; with `prompts` (the run's prompt records, tokenized with its tokenizer:
    each holds `prompt_tokens`), cache lengths and round sizes come from the real prompts."""
    config, g = settings.config, settings.config.generation
    model = config.policy.apply(settings.model)
    length = int(config.feature_lengths["inputs"]) + int(config.feature_lengths["targets"])
    train = [TrainProgram("finetune", "finetune/TrainConfig", model, settings.finetune, length)]
    if settings.bootstrap is not None:
        train.append(TrainProgram("bootstrap", "bootstrap/TrainConfig", model, settings.bootstrap, length))

    def program(name: str, records: Sequence[dict] | None, samples: int, temperature: float, top_k: int = 0,
                top_p: float = 1.0) -> DecodeProgram:
        if records is None or not records:
            longest, rows, tokens = None, None, None
            width = int(config.feature_lengths["inputs"])
        else:
            lengths = [r["prompt_tokens"] for r in records]
            longest, rows, tokens = max(lengths), len(lengths) * samples, sum(lengths)
            width = _round_up(longest, g.length_bucket)
        cache = g.max_cache_length or width + g.max_new_tokens
        return DecodeProgram(name, model, g.batch_size, cache, g.max_new_tokens, longest, rows, tokens,
                             temperature, top_k, top_p)

    train_set = test_set = None
    if prompts is not None:
        per_round = config.train_problems
        train_set = [r for m in METHODS for r in _first_problems(prompts.train[m], per_round)]
        test_set = [r for m in METHODS for r in select_by_dataset(prompts.test[m], config.eval_problems)]
        test_set += select_by_dataset(prompts.related, config.eval_problems)
    translations = None if train_set is None else _translation_rows(train_set, config)
    # The token rules are those rounds.py and evaluate.py sample each kind of prompt with.
    decode = [program("sample", train_set, g.num_samples, g.temperature, g.top_k, g.top_p),
              dataclasses.replace(program("translate", None, g.translation_samples, g.translation_temperature),
                                  rows=translations),
              program("eval_greedy", test_set, 1, 0.0)]
    if g.vote_samples:
        decode.append(program("eval_vote", test_set, g.vote_samples, g.vote_temperature))
    return RunPrograms(settings, tuple(train), tuple(decode))


def with_token_counts(problems: Problems, encode) -> Problems:
    """`problems` with `prompt_tokens` on every record: the length of the ids the sampler is given
    for its prompt (`encode(texts) -> id lists`, the run's prompt encoding)."""
    def counted(records: Sequence[dict]) -> list[dict]:
        ids = encode([r["prompt"] for r in records]) if records else []
        return [{**r, "prompt_tokens": len(t)} for r, t in zip(records, ids)]

    return Problems(train={m: counted(v) for m, v in problems.train.items()},
                    test={m: counted(v) for m, v in problems.test.items()}, related=counted(problems.related))


def _first_problems(records: Sequence[dict], n: int) -> list[dict]:
    """A round's training prompts: `n` problems (0: all); their sizes stand for any draw's."""
    if not n:
        return list(records)
    ids = sorted({str(r["problem_id"]) for r in records})[:n]
    keep = set(ids)
    return [r for r in records if str(r["problem_id"]) in keep]


def _translation_rows(train_set: Sequence[dict], config: RunConfig) -> int:
    """At most: every problem's verified solutions of each method, up to `max_per_problem`, each
    translated `translation_samples` times."""
    problems = {m: len({str(r["problem_id"]) for r in train_set if r["method"] == m}) for m in METHODS}
    per = config.mode.max_per_problem or config.generation.num_samples
    return sum(problems[d.split("_to_")[0]] for d in DIRECTIONS) * per * config.generation.translation_samples


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
def problems_of(programs: RunPrograms) -> list[str]:
    """Every reason the programs would fail, as messages naming the setting and the fix."""
    s = programs.settings
    shape = {axis: int(s.mesh_shape.get(axis, 1)) for axis in MESH_AXES}
    rows = 1
    for axis in mesh_axes_of_logical("batch", s.rules):
        rows *= shape[axis]
    out = []
    model = programs.train[0].model
    for logical, size, what in (("heads", model.n_head, "n_head"), ("vocab", model.vocab_size, "vocab_size"),
                                ("mlp", 4 * model.hidden_size, "4 x hidden_size"),
                                ("embed", model.hidden_size, "hidden_size")):
        split = 1
        for axis in mesh_axes_of_logical(logical, s.rules):
            split *= shape[axis]
        if size % split:
            out.append(f"the model's {what} ({size}) is split over {split} devices of the mesh {shape} "
                       f"(logical axis {logical!r}) and does not divide evenly: choose "
                       "partitioning.MeshConfig.shape so that it does")
    for p in programs.train:
        tc = p.train
        micro = tc.batch_size // tc.micro_batches
        if micro % rows:
            fix = _round_up(micro, rows) * tc.micro_batches
            out.append(f"{p.setting}: batch_size {tc.batch_size} in {tc.micro_batches} micro-batches gives "
                       f"{micro} rows per micro-batch, not a multiple of the {rows} data-parallel devices "
                       f"of the mesh {shape}: set {p.setting}.batch_size = {fix} (or fewer micro_batches: "
                       f"at most {max(1, tc.batch_size // rows)})")
        if tc.batch_size % s.hosts:
            out.append(f"{p.setting}: batch_size {tc.batch_size} does not divide over {s.hosts} hosts")
    g = s.config.generation
    if g.batch_size % rows:
        out.append(f"mmst.Generation.batch_size = {g.batch_size} rows decode at once, not a multiple of the "
                   f"{rows} devices rows are split over (mesh {shape}): set it to {_round_up(g.batch_size, rows)}")
    for p in programs.decode:
        if p.longest_prompt is not None and p.longest_prompt + p.max_new_tokens > p.cache_length:
            out.append(f"{p.name}: the longest prompt has {p.longest_prompt} tokens; with max_new_tokens "
                       f"{p.max_new_tokens} a row needs {p.longest_prompt + p.max_new_tokens} cache columns but "
                       f"mmst.Generation.max_cache_length is {p.cache_length}: raise it (or unbind it), lower "
                       "mmst.Generation.max_new_tokens, or shorten the prompts (the tasks' feature lengths)")
    budget = int(s.config.feature_lengths["inputs"])
    sample = next(p for p in programs.decode if p.name == "sample")
    # The sampler's ids start with the start token; a training example's inputs do not (the
    # feature converter's shift puts it there).
    if sample.longest_prompt is not None and sample.longest_prompt - 1 > budget:
        out.append(f"the longest training prompt has {sample.longest_prompt - 1} tokens but "
                   f"mmst.RunConfig.feature_lengths['inputs'] is {budget}: every training example of such a "
                   "prompt would be dropped; raise it to at least the tasks' inputs budget")
    if s.tokenizer_size is not None and s.tokenizer_size > model.vocab_size:
        out.append(f"{s.tokenizer} has {s.tokenizer_size} tokens but the model's vocabulary has "
                   f"{model.vocab_size}: ids beyond it would index past the embedding; use the model's "
                   "own tokenizer (or a model with a vocabulary at least that large)")
    return out


def check(programs: RunPrograms) -> RunPrograms:
    """The programs, or a ProgramError listing every problem (see `problems_of`)."""
    found = problems_of(programs)
    if found:
        raise ProgramError("this configuration would fail:\n  - " + "\n  - ".join(found))
    return programs


# --------------------------------------------------------------------------------------------
# Cost of a round
# --------------------------------------------------------------------------------------------
def round_flops(programs: RunPrograms) -> dict[str, float | None]:
    """FLOPs of one round per program: 6N per trained token, 2N per prefilled or generated token
    (every row counted at max_new_tokens: an upper bound); None where the rows are not known."""
    out: dict[str, float | None] = {}
    for p in programs.train:
        if p.name == "finetune":
            out[p.name] = 6.0 * p.model.num_params() * p.tokens
    for p in programs.decode:
        if p.rows is None:
            out[p.name] = None
            continue
        prompt = p.prompt_tokens if p.prompt_tokens is not None else p.rows * (p.cache_length - p.max_new_tokens)
        out[p.name] = 2.0 * p.model.num_params() * (prompt + p.rows * p.max_new_tokens)
    return out


def round_seconds(flops: Mapping[str, float | None], *, devices: int, peak_flops: float,
                  train_mfu: float = 0.4, decode_mfu: float = 0.1) -> dict[str, float | None]:
    """Seconds per program at an assumed fraction of the slice's peak (decoding is memory-bound,
    hence its lower figure)."""
    return {name: None if f is None else f / (devices * peak_flops * (train_mfu if name == "finetune" else decode_mfu))
            for name, f in flops.items()}
