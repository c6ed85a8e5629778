"""A synthetic world of arithmetic word problems for CPU smoke runs of MMST.

What it is. Six seeded problem families (`families.py`), each with a gold answer and a reference
solution in both methods: a one-line chain of thought ending in "The answer is N." and a Python
program defining `solution()`. Knobs per family: number size (`digits`) and number of operations
(`steps`), sampled from `Difficulty` ranges (`world.py`). Problems and solutions are short: with a
small byte-level BPE vocabulary a prompt is under 160 tokens and a solution under 96, so a tiny
BLOOM (~1M parameters) trained from scratch can learn them. `corpus.build_bootstrap_corpus` builds
the corpus that model is trained on first, with a chosen coverage per method and family and a
chosen share of translation pairs (text -> code, code -> text) per family.

Why it mirrors the paper's setting. MMST helps when two methods are good at different problems and
each can be taught by the other's verified solutions. The paper's BLOOM got those differing
strengths from pretraining; here the bootstrap corpus and the families' nature supply them:
- code-favoured families (`shopping`, `savings`) need exact arithmetic on 2-4 digit numbers. A
  program only has to copy the numbers and the operators (Python computes); a chain of thought has
  to produce every product and sum digit by digit, which a tiny model gets wrong.
- text-favoured families (`sequence`, `clock`, `frog`) keep the numbers small, so the chain of
  thought is short and pattern-like ("15 + 4 = 19."), while a program needs constructs that the
  other families' programs never use: list indexing, a loop, arithmetic modulo 12.
- a shared family (`change`) is solved the same plain way by both methods and anchors the formats.
By default each method sees all problems of its own families and of the shared family but only a
tenth of the other method's, and a quarter of every family's problems appear as translation pairs.
So the code method starts strong on big-number families and weak on pattern families, the text
method the other way round; MMST then samples each method where it is strong, translates the
verified solutions into the other method, verifies again and trains the other method on them,
which is what the paper does with few-shot translation prompts. Translating a big-number program
into text still needs the arithmetic, so transfer into the text method is expected mainly at the
small end of the number-size knob, as the paper found the weaker method gains but stays weaker.
The CPU smoke run (gin_configs/smoke.gin) binds other tables: every problem solved in text and 1% in
code, so that code, the method with the higher ceiling, starts as the weaker one (README, "The smoke
run's figures", has the results and the reason).
The CPU study (gin_configs/runs/study_smoke.gin) gives both methods the same coverage instead, and
adds the related family `compare` (`tasks.synthetic_world.related`): a yes/no question after the
same arithmetic, evaluated in text and never sampled for training (README, "The study").

Prompts are the zero-shot form of the real tasks' blocks (tasks.prompts): `Question: ...` then
`Solution:` or `Program:`; problem ids are `synthetic_<family>/<split>/<index>` and the dataset of a
problem is `synthetic_<family>`, so evaluation reports accuracy per family.
"""
