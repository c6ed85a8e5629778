"""SeqIO tasks and mixtures of mmst_jax; `import tasks` registers them.

Modules, each with one job:
  config         data directory, tokenizer and feature lengths (the gin edge)
  answers        canonical gold answers and the answer sentence
  readers        the public datasets in their published formats
  splits         train/test splits and cross-dataset deduplication
  exemplars/     few-shot exemplars per dataset, in both methods
  prompts        prompt layout and the truncation policy
  records        reading the JSON Lines records a round writes
  catalog        rendering + SeqIO registration of a task
  problem_tasks  dataset x method tasks and translation tasks
  known          known-correct solutions of training problems (a rehearsal's first round)
  training       training tasks over record files, and mixtures
  synthetic/     the synthetic arithmetic world for smoke runs
  command        `mmst tasks`
See tasks/README.md.
"""

from tasks import known, problem_tasks, training
from tasks.synthetic import tasks as synthetic_tasks
from tasks.vocabulary import DeferredVocabulary

VOCABULARY = DeferredVocabulary()

TASK_NAMES: tuple[str, ...] = tuple(
    problem_tasks.register_problem_tasks(VOCABULARY)
    + training.register_default_training(VOCABULARY)
    + synthetic_tasks.register_synthetic_tasks(VOCABULARY)
    + known.register_known_tasks(VOCABULARY))
MIXTURE_NAMES: tuple[str, ...] = ("mmst_train",)
