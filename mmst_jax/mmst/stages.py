"""The stages of a round, each reading only the files of the stages before it.

Round 0 is the base model: `train/` (the bootstrap corpus, when the model is trained from scratch),
`checkpoint/` (tokenizer.json and the model) and `eval/`. Every later round r:

    samples/{method}/part-*.jsonl       k samples per training problem, model of round r-1
    verified/{method}/part-*.jsonl      the verifier's verdicts
    translated/{A_to_B}/part-*.jsonl    verified solutions of A rewritten as B (model of round r-1)
    translated/{A_to_B}/verified/...    ... verified again: a translation counts only if correct
    train/{method}/part-*.jsonl         the round's training records (modes.build)
    checkpoint/model/                   the fine-tuned model (orbax), tokenizer from round 0
    eval/{samples,verified}/{greedy,vote}_{method}/part-*.jsonl, eval/summary.json

`Runner.stage(round, name, inputs, work, finish)` runs one stage: skipped if its marker is valid
(rundir.stage_state), otherwise every host does `work(dir)` (its own shard), a barrier, host 0 runs
`finish(dir)` (joins, summaries) and writes the marker, a barrier. A stage found damaged or stale is
cleared and redone; one without a marker is resumed from the files it finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from typing import Any, Callable, Mapping, Sequence

from etils import epath

from mmst_jax.mmst import evaluate, modes, rundir
from mmst_jax import faults
from mmst_jax.sampling import generate
from mmst_jax.verify import files
from mmst_jax.mmst.config import DIRECTIONS, METHODS, RunConfig
from mmst_jax.records import part_name, read_parts, write_json, write_jsonl, write_text, remove
from mmst_jax.distributed import barrier, host_info
from mmst_jax.models.orbax import Model, load_model, read_config

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Base:
    """The model before self-training: published weights (`hf_checkpoint`, with its tokenizer), or
    a `model_preset` trained from scratch on the bootstrap corpus with `train` (a TrainConfig),
    with a byte-level BPE tokenizer of the model's vocabulary size trained on the same corpus."""

    hf_checkpoint: str | None = None
    tokenizer: str | None = None  # default: the HF checkpoint's own
    model_preset: str = "tiny"
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train: Any = None  # TrainConfig for the bootstrap training


@dataclasses.dataclass
class Problems:
    """The problems of a run (tasks.readers.Problem): training problems (sampled each round), test
    problems of the datasets both methods solve, and related test problems (text method only)."""

    train: Sequence[Any]
    test: Sequence[Any]
    related: Sequence[Any] = ()


class Runner:
    def __init__(self, run_dir: rundir.RunDir, config: RunConfig, problems: Problems, base: Base,
                 finetune: Any, *, bootstrap: Sequence[dict] | None = None, mesh=None, rules=None):
        import jax

        from mmst_jax.sharding import DEFAULT_RULES, MeshConfig, make_mesh

        self.run_dir, self.config, self.problems, self.base = run_dir, config, problems, base
        self.finetune_config, self.bootstrap = finetune, bootstrap
        if mesh is None:  # one device; on several hosts every device, data parallel
            mesh = make_mesh((1, 1, 1), jax.devices()[:1]) if jax.process_count() == 1 else MeshConfig().make_mesh()
        self.mesh = mesh
        self.rules = tuple(rules or DEFAULT_RULES)
        self.host, self.hosts = host_info()
        self._model: tuple[str, Model] | None = None
        if base.hf_checkpoint is None and bootstrap is None:
            raise ValueError("the base model is neither an HF checkpoint (Base.hf_checkpoint) nor trained "
                             "from scratch on a bootstrap corpus: give one of them")
        self._train_by_id = {p.id: p for p in problems.train}

    # ----------------------------------------------------------------------------------------
    # The stage protocol
    # ----------------------------------------------------------------------------------------
    def stage(self, round_index: int, name: str, inputs: str, work: Callable[[epath.Path], None],
              finish: Callable[[epath.Path], dict] | None = None, hash_contents: bool = True) -> dict:
        d = self.run_dir.stage(round_index, name)
        state = rundir.stage_state(d, inputs)
        if state.done:
            return state.marker
        barrier(f"{d}:check")
        if state.reason != "missing":
            log.warning("%s: %s; redoing the stage", d, state.reason)
            if self.host == 0:
                remove(d)
            barrier(f"{d}:cleared")
        log.info("round %d: %s", round_index, name)
        d.mkdir(parents=True, exist_ok=True)
        work(d)
        barrier(f"{d}:worked")
        if self.host == 0:
            info = finish(d) if finish else {}
            faults.point("stage.done")
            rundir.mark_done(d, inputs, info, hash_contents)
        barrier(f"{d}:done")
        return rundir.stage_state(d).marker

    def digest(self, round_index: int, name: str) -> str | None:
        state = rundir.stage_state(self.run_dir.stage(round_index, name))
        return state.digest

    # ----------------------------------------------------------------------------------------
    # Models
    # ----------------------------------------------------------------------------------------
    @property
    def tokenizer_path(self) -> epath.Path:
        return self.run_dir.stage(0, "checkpoint") / "tokenizer.json"

    def model(self, round_index: int) -> Model:
        d = self.run_dir.stage(round_index, "checkpoint")
        path = rundir.model_path(d)
        if self._model is None or self._model[0] != path:
            self._model = None
            self._model = (path, load_model(path, self.tokenizer_path, self.mesh, self.rules))
        return self._model[1]

    def count_tokens(self, round_index: int) -> Callable[[str], int]:
        return generate.token_counter(self.model(round_index))

    # ----------------------------------------------------------------------------------------
    # Prompts
    # ----------------------------------------------------------------------------------------
    def round_problems(self, round_index: int) -> list[Any]:
        n = self.config.train_problems
        problems = list(self.problems.train)
        if n and n < len(problems):
            problems = sorted(problems, key=lambda p: p.id)
            random.Random(f"{self.config.generation.seed}:problems:{round_index}").shuffle(problems)
            problems = sorted(problems[:n], key=lambda p: (p.dataset, p.id))
        return problems

    def eval_problems(self, related: bool = False) -> list[Any]:
        source = self.problems.related if related else self.problems.test
        n, per = self.config.eval_problems, {}
        for p in source:
            per.setdefault(p.dataset, [])
            if not n or len(per[p.dataset]) < n:
                per[p.dataset].append(p)
        return [p for d in sorted(per) for p in per[d]]

    def solve_prompts(self, problems: Sequence[Any], method: str, count_tokens) -> list[dict]:
        from tasks.problem_tasks import render_problems

        rendered = render_problems(problems, method, count_tokens, self._prompt_lengths())
        if rendered.dropped:
            log.warning("%d %s prompts did not fit %s tokens and were left out", rendered.dropped, method,
                        self._prompt_lengths())
        return [{"problem_id": ex["problem_id"], "dataset": ex["dataset"], "method": method,
                 "gold": ex["gold"], "prompt": ex["inputs"]} for ex in rendered.examples]

    def _prompt_lengths(self) -> dict[str, int]:
        return dict(self.config.feature_lengths)

    # ----------------------------------------------------------------------------------------
    # Round 0: the base model
    # ----------------------------------------------------------------------------------------
    def base_round(self) -> None:
        train_digest = None
        if self.base.hf_checkpoint is None:
            def write_corpus(d):
                if self.host == 0:
                    for method in METHODS:
                        write_jsonl(d / method / part_name(0, 1),
                                           [r for r in self.bootstrap if r["method"] == method])

            def corpus_info(d):
                return {"train_examples": {m: sum(1 for r in self.bootstrap if r["method"] == m)
                                           for m in METHODS}}

            corpus_digest = hashlib.sha256(json.dumps(list(self.bootstrap), sort_keys=True).encode()).hexdigest()
            train_digest = self.stage(0, "train", rundir.combine("bootstrap", corpus_digest), write_corpus,
                                      corpus_info)["digest"]
        # The base model is a function of its training data and of these settings.
        recipe = json.dumps({"hf": self.base.hf_checkpoint, "preset": self.base.model_preset,
                             "overrides": dict(self.base.model_overrides), "train": repr(self.base.train),
                             "lengths": dict(self.config.feature_lengths)}, sort_keys=True)
        self.stage(0, "checkpoint", rundir.combine(train_digest, recipe), self._base_checkpoint,
                   lambda d: {"model": rundir.model_path(d)}, hash_contents=False)
        self.evaluate(0)

    def _base_checkpoint(self, d: epath.Path) -> None:
        if self.base.hf_checkpoint is not None:
            if self.host == 0:
                source = epath.Path(self.base.tokenizer or self.base.hf_checkpoint)
                if source.is_dir():
                    source = source / "tokenizer.json"
                write_text(d / "tokenizer.json", source.read_text())
                write_json(d / "model.json", {"path": os.fspath(self.base.hf_checkpoint), "format": "hf"})
            return
        from mmst_jax.models.bloom import BloomConfig
        from mmst_jax.vocab import train_bpe_tokenizer

        config = BloomConfig.preset(self.base.model_preset, **dict(self.base.model_overrides))
        if self.host == 0 and not (d / "tokenizer.json").exists():
            records = read_parts(self.run_dir.stage(0, "train") / "text") + read_parts(
                self.run_dir.stage(0, "train") / "code")
            texts = [r["prompt"] + r["completion"] for r in records]
            train_bpe_tokenizer(texts, vocab_size=config.vocab_size, path=d / "tokenizer.json")
        barrier(f"{d}:tokenizer")
        self._finetune(d, config, None, self.base.train, self.run_dir.stage(0, "train"), seed=0)

    # ----------------------------------------------------------------------------------------
    # Rounds 1..N
    # ----------------------------------------------------------------------------------------
    def round(self, r: int) -> None:
        previous = self.digest(r - 1, "checkpoint")
        samples = self.stage(r, "samples", rundir.combine(previous), lambda d: self._sample(r, d))["digest"]
        verified = self.stage(r, "verified", rundir.combine(samples), lambda d: self._verify(r, d),
                              self._verified_info)["digest"]
        translated = self.stage(r, "translated", rundir.combine(verified), lambda d: self._translate(r, d),
                                self._translated_info)["digest"]
        replay = self.digest(0, "train") if self.config.mode.replay else None
        train = self.stage(r, "train", rundir.combine(verified, translated, replay), lambda d: None,
                           lambda d: self._build(r, d))["digest"]
        init_round = 0 if self.config.mode.finetune_from == "base" else r - 1
        self.stage(r, "checkpoint", rundir.combine(train, self.digest(init_round, "checkpoint")),
                   lambda d: self._finetune_round(r, d, init_round),
                   lambda d: {"model": rundir.model_path(d)}, hash_contents=False)
        self.evaluate(r)

    def _sample(self, r: int, d: epath.Path) -> None:
        g = self.config.generation
        model = self.model(r - 1)
        count = generate.token_counter(model)
        problems = self.round_problems(r)
        for method in METHODS:
            prompts = self.solve_prompts(problems, method, count)
            generate.generate_records(
                prompts, d / method, model, temperature=g.temperature, num_samples=g.num_samples,
                seed=_seed(g.seed, r, f"samples/{method}"), round_index=r, max_new_tokens=g.max_new_tokens,
                top_k=g.top_k, top_p=g.top_p, batch_size=g.batch_size, chunk_rows=g.chunk_rows,
                length_bucket=g.length_bucket, mesh=self.mesh, rules=self.rules, progress=self.config.progress,
                desc=f"round {r} sampling {method}")

    def _verify_dir(self, source: epath.Path, target: epath.Path, desc: str) -> None:
        lim = self.config.limits
        name = part_name(self.host, self.hosts)
        files.verify_part(source / name, target / name, timeout_s=lim.timeout_s,
                                 memory_mb=lim.memory_mb, lanes=lim.lanes, restarts=lim.restarts,
                                 progress=self.config.progress, desc=desc)

    def _verify(self, r: int, d: epath.Path) -> None:
        for method in METHODS:
            self._verify_dir(self.run_dir.stage(r, "samples") / method, d / method, f"round {r} verifying {method}")

    def _verified_info(self, d: epath.Path) -> dict:
        records = [x for m in METHODS for x in read_parts(d / m)]
        return {"verified": files.summarize(records)}

    def _translate(self, r: int, d: epath.Path) -> None:
        from tasks.problem_tasks import render_translations

        g = self.config.generation
        model = self.model(r - 1)
        count = generate.token_counter(model)
        verified_dir = self.run_dir.stage(r, "verified")
        for direction in DIRECTIONS:
            src, dst = direction.split("_to_")
            sources = modes._dedup(sorted(read_parts(verified_dir / src),
                                          key=lambda x: (x["dataset"], str(x["problem_id"]), x["sample_index"])),
                                   self.config.mode.max_per_problem)
            train_prompts = {p["problem_id"]: p["prompt"] for p in self.solve_prompts(
                [self._train_by_id[pid] for pid in dict.fromkeys(s["problem_id"] for s in sources)
                 if pid in self._train_by_id], dst, count)}
            prompts = []
            for s in sources:
                examples = render_translations([s], direction, count, self._prompt_lengths()).examples
                if not examples or s["problem_id"] not in train_prompts:
                    continue
                prompts.append({"problem_id": s["problem_id"], "dataset": s["dataset"], "method": dst,
                                "gold": s["gold"], "prompt": examples[0]["inputs"],
                                "train_prompt": train_prompts[s["problem_id"]], "source_method": src,
                                "source_sample_index": s["sample_index"]})
            generate.generate_records(
                prompts, d / direction, model, temperature=g.translation_temperature,
                num_samples=g.translation_samples, seed=_seed(g.seed, r, direction), round_index=r,
                max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, chunk_rows=g.chunk_rows,
                length_bucket=g.length_bucket, mesh=self.mesh, rules=self.rules, progress=self.config.progress,
                desc=f"round {r} translating {direction}")
            self._verify_dir(d / direction, d / direction / "verified", f"round {r} verifying {direction}")

    def _translated_info(self, d: epath.Path) -> dict:
        out, lost = {}, {}
        for direction in DIRECTIONS:
            records = read_parts(d / direction / "verified")
            out[direction] = {"kept": sum(1 for x in records if x.get("correct")), "total": len(records)}
            lost[direction] = sum(1 for x in records if x.get("lost"))
        return {"translated": out, "lost": lost}

    def _build(self, r: int, d: epath.Path) -> dict:
        verified_dir, translated_dir = self.run_dir.stage(r, "verified"), self.run_dir.stage(r, "translated")
        verified = [x for m in METHODS for x in read_parts(verified_dir / m)]
        translated = [x for t in DIRECTIONS for x in read_parts(translated_dir / t / "verified")]
        seed = _seed(self.config.generation.seed, r, "build")
        mix = modes.build(self.config.mode, verified, translated, seed=seed)
        if self.config.mode.replay:
            base_dir = self.run_dir.stage(0, "train")
            base = [x for m in METHODS for x in (read_parts(base_dir / m) if (base_dir / m).exists() else [])]
            for method, extra in modes.replay_records(base, self.config.mode.replay, seed).items():
                mix[method] = mix[method] + extra
        for method in METHODS:
            write_jsonl(d / method / part_name(0, 1), mix[method])
        sources = {m: {s: sum(1 for x in mix[m] if x["source"] == s) for s in ("self", "translation", "replay")}
                   for m in METHODS}
        return {"train_examples": modes.counts(mix), "sources": sources}

    def _finetune_round(self, r: int, d: epath.Path, init_round: int) -> None:
        init_dir = self.run_dir.stage(init_round, "checkpoint")
        init = rundir.model_path(init_dir)
        config = read_config(init)
        self._finetune(d, config, init, self.finetune_config, self.run_dir.stage(r, "train"), seed=r)

    def _finetune(self, d: epath.Path, config, init: str | None, tc, train_dir: epath.Path, seed: int) -> None:
        """Trains `config` from `init` (a model directory, None: random) on the records of
        train_dir and writes d/model; the training state lives in d/.work until the stage is done
        (so a killed run resumes from its last checkpoint). With no records the model is `init`."""
        from mmst_jax import training
        from mmst_jax.models.orbax import save_orbax
        from mmst_jax.vocab import HFTokenizerVocabulary

        if (d / "model" / "config.json").exists() or (d / "model.json").exists():
            return  # written by an earlier run that was stopped before the marker
        records = [x for m in METHODS for x in read_parts(train_dir / m)]
        if not records:
            if init is None:
                raise ValueError(f"{train_dir}: no training records for the base model")
            log.warning("%s: no training records this round; the model stays %s", train_dir, init)
            if self.host == 0:
                write_json(d / "model.json", {"path": init, "format": "same-as"})
            return
        vocab = HFTokenizerVocabulary(os.fspath(self.tokenizer_path))
        data = training_batches(records, vocab, dict(self.config.feature_lengths),
                                tc.batch_size // self.hosts, seed=tc.seed + seed, host=self.host, hosts=self.hosts)

        def on_step(step, metrics):
            faults.point("train.step")

        state = training.train(config, init, data, tc, self.mesh, os.fspath(d / ".work"), rules=self.rules,
                               on_step=on_step)
        save_orbax(config, state.params, os.fspath(d / "model"))
        faults.point("export")

    # ----------------------------------------------------------------------------------------
    # Evaluation
    # ----------------------------------------------------------------------------------------
    def evaluate(self, r: int) -> dict:
        return self.stage(r, "eval", rundir.combine(self.digest(r, "checkpoint")), lambda d: self._eval(r, d),
                          self._eval_summary)

    def _eval_sets(self, count) -> list[tuple[str, list[dict]]]:
        sets = []
        test = self.eval_problems()
        for method in METHODS:
            prompts = self.solve_prompts(test, method, count)
            if method == "text" and self.problems.related:
                prompts += self.solve_prompts(self.eval_problems(related=True), "text", count)
            sets.append((method, prompts))
        return sets

    def _eval(self, r: int, d: epath.Path) -> None:
        g = self.config.generation
        model = self.model(r)
        count = generate.token_counter(model)
        for method, prompts in self._eval_sets(count):
            kinds = [("greedy", 0.0, 1)] + ([("vote", g.vote_temperature, g.vote_samples)] if g.vote_samples else [])
            for kind, temperature, k in kinds:
                name = f"{kind}_{method}"
                generate.generate_records(
                    prompts, d / "samples" / name, model, temperature=temperature, num_samples=k,
                    seed=_seed(g.seed, r, f"eval/{name}"), round_index=r, max_new_tokens=g.max_new_tokens,
                    batch_size=g.batch_size, chunk_rows=g.chunk_rows, length_bucket=g.length_bucket,
                    mesh=self.mesh, rules=self.rules, progress=self.config.progress,
                    desc=f"round {r} eval {kind} {method}")
                self._verify_dir(d / "samples" / name, d / "verified" / name, f"round {r} eval verifying {name}")

    def _eval_summary(self, d: epath.Path) -> dict:
        greedy, vote = [], []
        for method in METHODS:
            greedy += read_parts(d / "verified" / f"greedy_{method}")
            if (d / "verified" / f"vote_{method}").exists():
                vote += read_parts(d / "verified" / f"vote_{method}")
        summary = {"eval": evaluate.accuracy(greedy, vote), "overlap": evaluate.overlap(greedy),
                   "lost": sum(1 for x in greedy + vote if x.get("lost"))}
        write_json(d / "summary.json", summary)
        return summary


def _seed(seed: int, round_index: int, what: str) -> int:
    """A seed per (run seed, round, purpose), so stages never share random streams."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{round_index}:{what}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def training_batches(records: Sequence[dict], vocab, lengths: Mapping[str, int], batch_size: int, *, seed: int,
                     host: int = 0, hosts: int = 1):
    """Packed, shuffled, repeated training batches (tf.data) of prompt -> completion records.

    Examples longer than `lengths` are dropped (never truncated). Each host reads every `hosts`-th
    example. The stream is a function of the records and `seed` alone, so a resumed run sees the
    same batches."""
    import numpy as np
    import tensorflow as tf

    from mmst_jax import training

    inputs = vocab.encode_batch([r["prompt"] for r in records])
    targets = vocab.encode_batch([r["completion"] for r in records])
    eos = vocab.eos_id
    pairs = [(a, b + [eos]) for a, b in zip(inputs, targets)
             if len(a) <= lengths["inputs"] and len(b) + 1 <= lengths["targets"]]
    if len(pairs) < len(records):
        log.warning("%d of %d training examples are longer than %s tokens and were dropped",
                    len(records) - len(pairs), len(records), dict(lengths))
    pairs = pairs[host::hosts]
    if not pairs:
        raise training.DataError(f"no training example fits the lengths {dict(lengths)}")
    ragged_in = tf.ragged.constant([np.asarray(a, np.int32) for a, _ in pairs], dtype=tf.int32)
    ragged_tg = tf.ragged.constant([np.asarray(b, np.int32) for _, b in pairs], dtype=tf.int32)
    ds = tf.data.Dataset.from_tensor_slices({"inputs": ragged_in, "targets": ragged_tg})
    ds = ds.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]})
    return training.seqio_dataset(ds, dict(lengths), batch_size, pack=True, shuffle=True, seed=seed)


def remove_work(run_dir: rundir.RunDir, round_index: int) -> None:
    """Drops a finished checkpoint stage's training state (kept only while the stage runs)."""
    work = run_dir.stage(round_index, "checkpoint") / ".work"
    if work.exists() and rundir.stage_state(run_dir.stage(round_index, "checkpoint")).done:
        shutil.rmtree(os.fspath(work), ignore_errors=True)
