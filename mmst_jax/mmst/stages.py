"""The stage protocol of a run, and the context every stage body reads.

Round 0 is the base model: `train/` (the bootstrap corpus, when the model is trained from scratch),
`checkpoint/` (tokenizer.json and the model) and `eval/`. Every later round r:

    samples/{method}/part-*.jsonl       k samples per training problem, model of round r-1
    verified/{method}/part-*.jsonl      the verifier's verdicts
    translated/{A_to_B}/part-*.jsonl    verified solutions of A rewritten as B (model of round r-1)
    translated/{A_to_B}/verified/...    ... verified again: a translation counts only if correct
    train/{method}/part-*.jsonl         the round's training records (modes.build)
    checkpoint/model/                   the fine-tuned model (orbax), tokenizer from round 0
    eval/{samples,verified}/{greedy,vote}_{method}/part-*.jsonl, eval/summary.json

`Stages.run(round, name, inputs, work, finish)` runs one stage: skipped if its marker is valid
(rundir.stage_state), otherwise every host does `work(dir)` (its own shard), a barrier, host 0 runs
`finish(dir)` (joins, summaries) and writes the marker, a barrier. A stage found damaged or stale is
cleared and redone; one without a marker is resumed from the files it finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any, Callable, Mapping, Sequence

from etils import epath

from mmst_jax import faults
from mmst_jax.distributed import barrier, host_info
from mmst_jax.mmst import rundir
from mmst_jax.mmst.config import RunConfig
from mmst_jax.mmst.problems import Problems, TaskNames
from mmst_jax.models.orbax import Model, load_model
from mmst_jax.records import remove

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


class Stages:
    """Runs stages of one run directory under the protocol above, on every host."""

    def __init__(self, run_dir: rundir.RunDir):
        self.run_dir = run_dir
        self.host, self.hosts = host_info()

    def run(self, round_index: int, name: str, inputs: str, work: Callable[[epath.Path], None],
            finish: Callable[[epath.Path], dict] | None = None, *, hash_contents: bool = True) -> dict:
        """Runs (or skips, or resumes) one stage; returns its marker."""
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
        return rundir.stage_state(self.run_dir.stage(round_index, name)).digest


@dataclasses.dataclass
class RunContext:
    """What the stage bodies of a run share: its directory and settings, its prompts, the mesh,
    and the model last loaded (a round's stages sample one model)."""

    run_dir: rundir.RunDir
    config: RunConfig
    tasks: TaskNames
    base: Base
    finetune: Any  # TrainConfig of every round's fine-tuning
    mesh: Any
    rules: tuple
    stages: Stages
    problems: Problems | None = None  # read from the tasks when first needed (after round 0's tokenizer)
    _model: tuple[str, Model] | None = None
    check_memory: bool = True  # compile the programs before round 0 on accelerators and check the fit
    _checked: str | None = None  # how far check_programs got: "settings", then "prompts"

    @property
    def host(self) -> int:
        return self.stages.host

    @property
    def hosts(self) -> int:
        return self.stages.hosts

    @property
    def tokenizer_path(self) -> epath.Path:
        return rundir.tokenizer_path(self.run_dir)

    def model(self, round_index: int) -> Model:
        """The model of a round's checkpoint stage, loaded onto the mesh (kept until another is
        asked), computing under the run's policy with the parameters as stored."""
        path = rundir.model_path(self.run_dir.stage(round_index, "checkpoint"))
        if self._model is None or self._model[0] != path:
            self._model = None
            model = load_model(path, self.tokenizer_path, self.mesh, self.rules)
            model.config = dataclasses.replace(self.config.policy.apply(model.config),
                                               param_dtype=model.config.param_dtype)
            self._model = (path, model)
        return self._model[1]

    def prompts(self) -> Problems:
        """The run's prompt records, read from its SeqIO tasks once; the tasks must encode with the
        run's tokenizer."""
        from mmst_jax.mmst import problems as problem_tasks
        from mmst_jax.vocab import HFTokenizerVocabulary

        if self.problems is None:
            theirs = problem_tasks.task_vocabulary(self.tasks)
            ours = HFTokenizerVocabulary(str(self.tokenizer_path))
            if theirs != ours:
                raise problem_tasks.TaskError(
                    f"the tasks encode with another tokenizer than the run's ({self.tokenizer_path}): bind "
                    f"tasks.tokenizer.path to it, or leave it unbound in `mmst run`")
            self.problems = problem_tasks.problem_prompts(self.tasks)
        return self.problems

    def model_config(self, path: str | None = None):
        """The BloomConfig a model directory (default: the base model) trains and samples as: its
        architecture under the run's policy."""
        from mmst_jax.mmst.programs import base_model
        from mmst_jax.models.orbax import read_config

        return self.config.policy.apply(read_config(path) if path is not None else base_model(self.base)[0])

    def check_programs(self) -> None:
        """Refuses, on every host, a configuration whose programs would fail (mmst_jax.mmst.programs):
        before round 0 from the settings alone, and again once the run's tokenizer exists, with its
        real prompts. Raises programs.ProgramError (a task not registered: TaskError)."""
        from mmst_jax.mmst import programs
        from mmst_jax.mmst.problems import get_task
        from mmst_jax.records import DIRECTIONS, METHODS
        from mmst_jax.vocab import HFTokenizerVocabulary

        if self._checked == "prompts":
            return
        for name in self.tasks.problems:  # registered, before anything reads them
            for method in METHODS:
                get_task(f"{name}_{method}")
        for name in self.tasks.related:
            get_task(f"{name}_text")
        for direction in DIRECTIONS:
            get_task(self.tasks.translation.format(direction=direction))
        own = self.tokenizer_path.exists()
        tokenizer = self.tokenizer_path if own else programs.base_tokenizer(self.base)
        settings = programs.settings_for(base=self.base, config=self.config, finetune=self.finetune,
                                         mesh_shape=self.mesh.shape, rules=self.rules, hosts=self.hosts,
                                         tokenizer=tokenizer)
        prompts = None
        if own:
            encode = HFTokenizerVocabulary(str(self.tokenizer_path)).encode_prompts
            prompts = programs.with_token_counts(self.prompts(), encode)
        described = programs.check(programs.describe(settings, prompts))
        if own and self.check_memory:
            self._check_memory(described)
        self._checked = "prompts" if own else "settings"

    def _check_memory(self, described, limit_bytes: float | None = None) -> None:
        """On accelerators that report their memory (or against `limit_bytes`), the run's programs
        compiled for its mesh must fit; raises programs.ProgramError."""
        from mmst_jax import memory_plan
        from mmst_jax.mmst import programs

        limit = limit_bytes or memory_plan.device_memory_limit(self.mesh)
        if limit is None:
            return
        found = memory_plan.memory_problems(described, self.mesh, self.rules, limit)
        if found:
            raise programs.ProgramError("this configuration would fail:\n  - " + "\n  - ".join(found))


def seed_for(seed: int, round_index: int, what: str) -> int:
    """A seed per (run seed, round, purpose), so stages never share random streams."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{round_index}:{what}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def select_by_dataset(records: Sequence[dict], per_dataset: int, *, grouped: bool = True) -> list[dict]:
    """The first `per_dataset` records of each dataset (0: all): grouped by dataset in sorted
    order, or (`grouped=False`) in their own order."""
    count: dict[str, int] = {}
    kept = []
    for r in records:
        count[r["dataset"]] = count.get(r["dataset"], 0) + 1
        if not per_dataset or count[r["dataset"]] <= per_dataset:
            kept.append(r)
    return sorted(kept, key=lambda r: r["dataset"]) if grouped else kept
