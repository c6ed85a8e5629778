"""Known-solution tasks: correct solutions of training problems, in the run's own prompt format.

A run's model writes every solution it trains on; a model that solves nothing (a random one, in a
rehearsal of a configuration) gives a round nothing to train on, so fine-tuning, the export of its
model and the evaluation of that model never run. These tasks give such a run solutions that are
known to be correct, to mix into its first round's samples (`mmst.Tasks.known`,
mmst_jax.mmst.problems): they are verified like every sample and flow into the translations and
the training mixture from there.

- `mmst_known_{dataset}_{method}` for the math datasets (tasks.problem_tasks.MATH_DATASETS) x (text,
  code); `mmst_known_synthetic_{method}` and `mmst_known_synthetic_{family}_{method}` for the
  synthetic world: `KNOWN_TASK` with the problem set's name, as `mmst.Tasks.known` binds it.
  Split `train`. `inputs`: the solve prompt of the problem exactly as the problem task
  `{dataset}_{method}` renders its train split (the same renderer, `render_problems`, the same
  budget), `targets`: the known solution as the method's completion (tasks.prompts.completion), and
  string metadata `problem_id` (an id of the problem task's train split), `dataset`, `method`,
  `gold`. A problem may have several known solutions (one example each), or none.
- What is known (nothing is invented):
  - text: GSM8K's published rationale of every training problem, without its calculator
    annotations (`<<48/2=24>>`) and its `#### N` line, its lines joined into one (a line without a
    closing mark gets a full stop), ending in the answer sentence (`The answer is N.`); and every
    dataset's few-shot exemplars' own text solutions;
  - code: the exemplars' programs;
  - the synthetic world: every training problem's reference solution in both methods.
  Exemplars are written from training problems (tasks/exemplars); an exemplar whose problem is not
  among the problem task's train problems (the four MAWPS subsets share one set; a problem task
  that keeps only part of its split) is left out of that dataset. The problems are always the problem
  task's own, so known-solution ids are always ids of its train split.
- Their catalog kind is `known`; prompts and completions are fitted to the budget of the problem
  task's kind (`few_shot`, or `synthetic`): a known solution whose completion (+ EOS) is longer than
  its `targets` budget is dropped and counted, as a problem whose prompt does not fit is.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import seqio

from tasks import answers, config, prompts, splits
from tasks.catalog import Rendered, TaskInfo, register
from tasks.exemplars import exemplars_for
from tasks.problem_tasks import MATH_DATASETS, Counter, _problem_renderer, render_problems
from tasks.readers import Problem

KNOWN_TASK = "mmst_known_{name}_{method}"  # bind mmst.Tasks.known to this pattern
_CLOSING = ".!?,:;"


def rationale_solution(reference: str, gold: str) -> str:
    """A worked solution as published (GSM8K's rationale, annotations and `#### N` line removed) as
    a text-method solution: one line, each of its lines a sentence, ending in the answer sentence."""
    lines = [" ".join(line.split()) for line in reference.splitlines()]
    sentences = [line if line[-1] in _CLOSING else line + "." for line in lines if line]
    return " ".join([*sentences, answers.answer_sentence(gold)])


def known_solutions(dataset: str, method: str, problems: Sequence[Problem]) -> dict[str, list[str]]:
    """The known solutions (bare, before `completion`) of a dataset's training problems in one
    method, by problem id; problems without one are absent. Rationales come before exemplars."""
    if method not in prompts.METHODS:
        raise prompts.PromptError(f"unknown method {method!r}; methods are {prompts.METHODS}")
    ids = {p.id for p in problems}
    out: dict[str, list[str]] = {}
    if method == "text" and dataset == "gsm8k":
        for p in problems:
            if p.reference:
                out.setdefault(p.id, []).append(rationale_solution(p.reference, p.gold))
    for e in exemplars_for(dataset):
        solution = getattr(e, method)
        if solution and e.source in ids:
            out.setdefault(e.source, []).append(solution)
    return out


def render_known(problems: Iterable[Problem], method: str, solutions: Mapping[str, Sequence[str]],
                 count_tokens: Counter = None, lengths: Mapping[str, int] | None = None) -> Rendered:
    """Known-solution examples: the problem task's prompt (render_problems, over the problems that
    have a known solution) in `inputs`, one example per known solution in `targets`."""
    chosen = [p for p in problems if solutions.get(p.id)]
    rendered = render_problems(chosen, method, count_tokens, lengths)
    kept = {ex["problem_id"] for ex in rendered.examples}
    dropped = sum(len(solutions[p.id]) for p in chosen if p.id not in kept)
    examples = []
    for ex in rendered.examples:
        for solution in solutions[ex["problem_id"]]:
            target = prompts.completion(method, solution)
            if count_tokens is not None and lengths is not None and count_tokens(target) + 1 > lengths["targets"]:
                dropped += 1
                continue
            examples.append({**ex, "targets": target})
    return Rendered(examples, dropped)


def _dataset_renderer(dataset: str, method: str) -> Callable[[str, Counter], Rendered]:
    problem_task = _problem_renderer(dataset, method)

    def render(split: str, count_tokens: Counter) -> Rendered:
        # The problem task's own problems (whatever it keeps of the split), read without fitting.
        listed = {e["problem_id"] for e in problem_task(split, None).examples}
        problems = [p for p in splits.cached_splits(config.data_dir()).get(dataset, split) if p.id in listed]
        return render_known(problems, method, known_solutions(dataset, method, problems), count_tokens,
                            config.feature_lengths("few_shot"))
    return render


def _synthetic_renderer(family: str | None, method: str) -> Callable[[str, Counter], Rendered]:
    from tasks.synthetic.tasks import problems_of

    def render(split: str, count_tokens: Counter) -> Rendered:
        world = problems_of(split, family)
        solutions = {p.id: [p.solution(method)] for p in world}
        return render_known((p.to_problem() for p in world), method, solutions, count_tokens,
                            config.feature_lengths("synthetic"))
    return render


def register_known_tasks(vocabulary: seqio.Vocabulary) -> list[str]:
    """Registers every known-solution task; returns their names."""
    from tasks.synthetic import world

    infos = []
    for dataset in MATH_DATASETS:
        for method in prompts.METHODS:
            what = ("GSM8K rationales and exemplar solutions" if (dataset, method) == ("gsm8k", "text")
                    else f"exemplar {'programs' if method == 'code' else 'solutions'}")
            infos.append(TaskInfo(KNOWN_TASK.format(name=dataset, method=method), "known",
                                  f"{dataset} training problems' known {method} solutions ({what}); "
                                  f"inputs: the {dataset}_{method} prompt", ("train",),
                                  _dataset_renderer(dataset, method)))
    for family in (None, *world.PROBLEM_FAMILIES):
        name = "synthetic" if family is None else f"synthetic_{family}"
        for method in prompts.METHODS:
            infos.append(TaskInfo(KNOWN_TASK.format(name=name, method=method), "known",
                                  f"synthetic world ({'all families' if family is None else 'family ' + family}) "
                                  f"training problems' reference {method} solutions; inputs: the {name}_{method} "
                                  f"prompt", ("train",), _synthetic_renderer(family, method)))
    for info in infos:
        register(info, vocabulary)
    return [info.name for info in infos]
