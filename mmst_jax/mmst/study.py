"""A study: MMST and its ablations over seeds, summarised with the paper's claims and intervals.

    study = StudyConfig(seeds=(3, 4, 5), directory="runs/study", modes={"mmst": {"mode": "mmst"}, ...})
    runs(study)                      # [(seed, mode name, run directory)], in the order they run
    summary = summarize(study)       # from the runs' report/ files; also written by write_study
    write_study(study)               # DIRECTORY/study.json, DIRECTORY/study.html

Each run is an ordinary MMST run in `DIRECTORY/seed_S/MODE` (`mmst study` runs them: the same
config with SEED, RUN_DIR and the mode's ModeConfig settings bound). The first mode of a seed trains
the base model; the others copy its round 0 and its round 1 samples, verified samples and
translations, which do not depend on the mode (mmst_jax.mmst.loop.run_mmst).

The summary, per mode, method and dataset: accuracy per round (mean, standard deviation, every
seed); training examples per mode, round and source; the correlation of the methods' solved
problems on the training samples (the paper's Table 4) and on the test set; the cross-method
oracle, vote and choice; and the claims (README, "The study"), each a per-seed difference in
accuracy points averaged over the problem datasets, with its mean and 95% interval over seeds
(Student's t). On each seed and dataset the weak method is the one whose base model solved fewer
of the training problems it sampled (`weak_and_strong`; text on a tie), the strong method the
other; the last round is compared.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import statistics
from typing import Callable, Mapping, Sequence

from etils import epath

from mmst_jax.mmst import metrics as metrics_lib
from mmst_jax.mmst.modes import MODES
from mmst_jax.records import METHODS, write_json, write_text

MODE_KEYS = ("mode", "cap_to")


class StudyError(ValueError):
    """A study that cannot be run as configured; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """`seeds` (the SEED macro of each run), `directory` (local or gs://) and `modes`: name ->
    ModeConfig settings ({"mode": ..., "cap_to": ...}); every other setting is the config's own."""

    seeds: Sequence[int] = (0, 1, 2)
    directory: str = "runs/study"
    modes: Mapping[str, Mapping[str, str | None]] = dataclasses.field(default_factory=lambda: {
        "mmst": {"mode": "mmst"}, "self_training": {"mode": "self_training"},
        "cross_only": {"mode": "cross_only"}, "mmst_capped": {"mode": "mmst", "cap_to": "self_training"}})

    def __post_init__(self):
        seeds = list(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
            raise StudyError(f"mmst.study.seeds (STUDY_SEEDS) must be distinct integers, got {self.seeds!r}")
        if not self.modes:
            raise StudyError("mmst.study.modes is empty; name at least one mode, e.g. {'mmst': {'mode': 'mmst'}}")
        for name, settings in self.modes.items():
            if not name or "/" in name:
                raise StudyError(f"study mode name {name!r} must be a non-empty name without '/'")
            unknown = set(settings) - set(MODE_KEYS)
            if unknown or settings.get("mode") not in MODES:
                raise StudyError(f"study mode {name!r}: {dict(settings)} must set 'mode' (one of {MODES}) and "
                                 f"optionally 'cap_to'; unknown keys: {sorted(unknown)}")
            if settings.get("cap_to") not in (None, *MODES):
                raise StudyError(f"study mode {name!r}: cap_to={settings['cap_to']!r} is not a mode of {MODES}")


def run_dir(study: StudyConfig, seed: int, mode: str) -> str:
    return f"{study.directory.rstrip('/')}/seed_{seed}/{mode}"


def runs(study: StudyConfig) -> list[tuple[int, str, str]]:
    """(seed, mode name, run directory) of every run, seed by seed, modes in their given order."""
    return [(seed, mode, run_dir(study, seed, mode)) for seed in study.seeds for mode in study.modes]


def role_of(settings: Mapping[str, str | None]) -> str | None:
    """Which claim a mode's settings serve: 'mmst', 'self_training', 'capped' (mmst capped to
    self-training) or None."""
    mode, cap = settings.get("mode"), settings.get("cap_to")
    if cap is None:
        return mode if mode in ("mmst", "self_training") else None
    return "capped" if (mode, cap) == ("mmst", "self_training") else None


# --- statistics -----------------------------------------------------------------------------------

def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (scipy)."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


def interval(values: Sequence[float]) -> dict:
    """{"mean", "sd", "ci95": [lo, hi], "values"} over seeds; one value has no interval (None)."""
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "sd": None, "ci95": None, "values": []}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "sd": None, "ci95": None, "values": values}
    sd = statistics.stdev(values)
    half = t_quantile(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "values": values}


# --- reading the runs -----------------------------------------------------------------------------

def _read(path: epath.Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _run_reports(study: StudyConfig) -> dict[str, dict[int, tuple[dict, dict]]]:
    """{mode: {seed: (metrics, details)}} of the runs that have a report."""
    out: dict[str, dict[int, tuple[dict, dict]]] = {m: {} for m in study.modes}
    for seed, mode, d in runs(study):
        report = epath.Path(d) / "report"
        m, details = _read(report / "metrics.json"), _read(report / "details.json")
        if m and details and m.get("rounds"):
            out[mode][seed] = (m, details)
    return out


def _problem_datasets(metrics: dict) -> list[str]:
    """Datasets both methods were evaluated on (not `all`, not a related set)."""
    first = metrics["rounds"][0]["eval"]
    return sorted(d for d, per in first.items() if d != metrics_lib.ALL and all(m in per for m in METHODS))


def _related_datasets(metrics: dict) -> list[str]:
    first = metrics["rounds"][0]["eval"]
    return sorted(d for d, per in first.items() if d != metrics_lib.ALL and set(per) == {"text"})


def _accuracy(metrics: dict, r: int, dataset: str, method: str) -> float:
    """Accuracy in points, rounded to 1e-9 (a fraction of problems times 100 is exact to that)."""
    return round(100.0 * metrics["rounds"][r]["eval"][dataset][method]["accuracy"], 9)


# --- claims ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim: a per-seed value in accuracy points, and when it holds given its interval."""

    name: str
    description: str
    needs: tuple[str, ...]  # roles of the modes it compares
    value: Callable[[Mapping[str, tuple[dict, dict]]], float | None]  # (metrics, details) per role -> points
    rule: str  # "gain>=10" | "positive" | "not_negative"


def _mean_over(datasets: Sequence[str], xs: Callable[[str], float]) -> float | None:
    values = [xs(d) for d in datasets]
    return statistics.fmean(values) if values else None


def weak_and_strong(metrics: dict, details: dict, dataset: str) -> tuple[str, str, str]:
    """(weak method, strong method, chosen by) of a run's problem dataset, from its base model.

    The weak method is the one that solved fewer of the training problems both methods sampled in
    round 1 (the base model's samples, any verified sample; known solutions are not counted), text
    on a tie: chosen by "train". The test set is not looked at: picking the method with the lower
    round-0 test accuracy would pick, among close methods, the one whose test score came out low by
    chance, and its gain would be overstated (regression to the mean). A dataset no round sampled
    for training falls back to round-0 test accuracy: chosen by "test".
    """
    solved = details["rounds"][1].get("train_overlap", {}).get(dataset) if len(details["rounds"]) > 1 else None
    if solved and solved["n"]:
        text, code, by = solved["both"] + solved["only_text"], solved["both"] + solved["only_code"], "train"
    else:
        text, code, by = _accuracy(metrics, 0, dataset, "text"), _accuracy(metrics, 0, dataset, "code"), "test"
    return ("text", "code", by) if text <= code else ("code", "text", by)


def _methods(metrics: dict, details: dict, which: int) -> dict[str, str]:
    """{problem dataset: its weak (which=0) or strong (1) method}."""
    return {d: weak_and_strong(metrics, details, d)[which] for d in _problem_datasets(metrics)}


def _gain(which: int, role: str) -> Callable[[Mapping[str, tuple[dict, dict]]], float | None]:
    """Mean over datasets of (role's last round - round 0) for the weak (0) or strong (1) method."""
    def value(runs_: Mapping[str, tuple[dict, dict]]) -> float | None:
        m, details = runs_[role]
        last, method = len(m["rounds"]) - 1, _methods(m, details, which)
        return _mean_over(list(method), lambda d: _accuracy(m, last, d, method[d]) - _accuracy(m, 0, d, method[d]))
    return value


def _versus(which: int, role: str, other: str) -> Callable[[Mapping[str, tuple[dict, dict]]], float | None]:
    """Mean over datasets of (role - other) at the last round common to both, weak or strong method
    (of their shared base model)."""
    def value(runs_: Mapping[str, tuple[dict, dict]]) -> float | None:
        (a, a_details), (b, _) = runs_[role], runs_[other]
        last, method = min(len(a["rounds"]), len(b["rounds"])) - 1, _methods(a, a_details, which)
        return _mean_over(list(method), lambda d: _accuracy(a, last, d, method[d]) - _accuracy(b, last, d, method[d]))
    return value


def _related(runs_: Mapping[str, tuple[dict, dict]]) -> float | None:
    m, _ = runs_["mmst"]
    last = len(m["rounds"]) - 1
    return _mean_over(_related_datasets(m), lambda d: _accuracy(m, last, d, "text") - _accuracy(m, 0, d, "text"))


CLAIMS = (
    Claim("weak_method_gain", "MMST's weak method, last round minus round 0", ("mmst",), _gain(0, "mmst"), "gain>=10"),
    Claim("strong_method_gain", "MMST's strong method, last round minus round 0", ("mmst",), _gain(1, "mmst"),
          "not_negative"),
    Claim("mmst_beats_self_training_weak", "weak method, MMST minus self-training at the last round",
          ("mmst", "self_training"), _versus(0, "mmst", "self_training"), "positive"),
    Claim("mmst_beats_self_training_strong", "strong method, MMST minus self-training at the last round",
          ("mmst", "self_training"), _versus(1, "mmst", "self_training"), "positive"),
    Claim("capped_mmst_beats_self_training_weak",
          "weak method, MMST capped to self-training's sizes minus self-training at the last round",
          ("capped", "self_training"), _versus(0, "capped", "self_training"), "not_negative"),
    Claim("related_task_gain", "MMST's text method on the related tasks, last round minus round 0", ("mmst",),
          _related, "positive"),
)
RULES = {"gain>=10": "mean >= 10 and the interval above 0", "positive": "the interval above 0",
         "not_negative": "mean >= 0"}


def _holds(rule: str, summary: dict) -> bool | None:
    mean, ci = summary["mean"], summary["ci95"]
    mean = None if mean is None else round(mean, 9)
    if mean is None:
        return None
    if rule == "not_negative":
        return mean >= 0
    if ci is None:
        return None
    return ci[0] > 0 and (rule != "gain>=10" or mean >= 10)


def claims(reports: Mapping[str, Mapping[int, tuple[dict, dict]]], roles: Mapping[str, str],
           seeds: Sequence[int]) -> list[dict]:
    """Every claim over the seeds whose runs of the modes it needs have reports."""
    by_role = {role: reports[mode] for mode, role in roles.items()}
    out = []
    for claim in CLAIMS:
        if not all(r in by_role for r in claim.needs):
            out.append({"name": claim.name, "holds": None, "mean": None, "ci95": None, "seeds": [],
                        "values": [], "rule": RULES[claim.rule], "description": claim.description,
                        "why_not": f"the study has no mode for {[r for r in claim.needs if r not in by_role]}"})
            continue
        used = [s for s in seeds if all(s in by_role[r] for r in claim.needs)]
        values = [claim.value({r: by_role[r][s] for r in claim.needs}) for s in used]
        kept = [(s, v) for s, v in zip(used, values) if v is not None]
        summary = interval([v for _, v in kept])
        out.append({"name": claim.name, "holds": _holds(claim.rule, summary), "mean": summary["mean"],
                    "ci95": summary["ci95"], "seeds": [s for s, _ in kept], "values": summary["values"],
                    "rule": RULES[claim.rule], "description": claim.description})
    return out


# --- the summary ----------------------------------------------------------------------------------

def _per_round(per_seed: Mapping[int, tuple[dict, dict]], get: Callable[[dict, dict, int], float | None]) -> list:
    """[interval over seeds] per round, for rounds every seed has."""
    if not per_seed:
        return []
    n = min(len(m["rounds"]) for m, _ in per_seed.values())
    out = []
    for r in range(n):
        values = {s: get(m, d, r) for s, (m, d) in sorted(per_seed.items())}
        kept = {s: v for s, v in values.items() if v is not None}
        out.append({**interval(list(kept.values())), "seeds": list(kept)})
    return out


def _eval_value(dataset: str, method: str) -> Callable[[dict, dict, int], float | None]:
    def get(m, d, r):
        x = m["rounds"][r]["eval"].get(dataset, {}).get(method)
        return None if x is None else 100.0 * x["accuracy"]
    return get


def _detail_value(key: str, dataset: str, field: str, scale: float = 1.0) -> Callable[[dict, dict, int], float | None]:
    def get(m, d, r):
        x = d["rounds"][r].get(key, {}).get(dataset, {}).get(field)
        return None if x is None else scale * x
    return get


def _sources(d: dict, r: int, method: str, source: str) -> float | None:
    return d["rounds"][r].get("train_sources", {}).get(method, {}).get(source)


def summarize(study: StudyConfig) -> dict:
    """The study's summary (the contents of study.json) from the runs' reports so far."""
    reports = _run_reports(study)
    roles = {mode: role for mode, s in study.modes.items() if (role := role_of(s)) is not None}
    any_report = next((m for per in reports.values() for m, _ in per.values()), None)
    datasets = sorted(any_report["rounds"][0]["eval"]) if any_report else []
    accuracy, sizes, correlation, cross = {}, {}, {}, {}
    evaluated = any_report["rounds"][0]["eval"] if any_report else {}
    for mode, per_seed in reports.items():
        accuracy[mode] = {ds: {m: _per_round(per_seed, _eval_value(ds, m)) for m in METHODS if m in evaluated[ds]}
                          for ds in datasets}
        sizes[mode] = {m: {src: _per_round(per_seed, lambda mm, d, r, m=m, src=src: _sources(d, r, m, src))
                           for src in ("self", "translation", "replay")} for m in METHODS}
        correlation[mode] = {ds: {"train": _per_round(per_seed, _detail_value("train_overlap", ds, "correlation")),
                                  "test": _per_round(per_seed, _detail_value("overlap", ds, "correlation"))}
                             for ds in datasets}
        cross[mode] = {ds: {k: _per_round(per_seed, _detail_value("cross", ds, k, 100.0))
                            for k in ("oracle", "vote", "choice")} for ds in datasets}
    done = {mode: sorted(per) for mode, per in reports.items()}
    weak = {}  # per seed, from its first mode with a report (the modes of a seed share the base model)
    for seed in study.seeds:
        m, d = next((per[seed] for per in reports.values() if seed in per), (None, None))
        if m is not None:
            weak[seed] = {ds: dict(zip(("weak", "strong", "by"), weak_and_strong(m, d, ds)))
                          for ds in _problem_datasets(m)}
    return {"seeds": list(study.seeds), "modes": list(study.modes), "mode_settings": {k: dict(v) for k, v in
                                                                                      study.modes.items()},
            "runs": done, "datasets": datasets, "weak_method": weak, "claims": claims(reports, roles, study.seeds),
            "accuracy": accuracy, "train_examples": sizes, "correlation": correlation, "cross_method": cross}


def write_study(study: StudyConfig) -> dict:
    summary = summarize(study)
    out = epath.Path(study.directory)
    write_json(out / "study.json", summary)
    write_text(out / "study.html", render_html(summary))
    return summary


# --- study.html -----------------------------------------------------------------------------------

def _fmt(x: dict) -> str:
    if not x or x.get("mean") is None:
        return ""
    sd = "" if x.get("sd") is None else f" ± {x['sd']:.1f}"
    return f"{x['mean']:.1f}{sd} <small>[{', '.join(f'{v:.0f}' for v in x['values'])}]</small>"


def _rows(table: dict, cell: Callable[[dict], str]) -> list[str]:
    """Table rows of {A: {B: {C: [ROUND ...]}}}: A, B, C, then one cell a round; rows with no
    value in any round are left out."""
    out = []
    for a, per in table.items():
        for b, inner in per.items():
            for c, rounds in inner.items():
                if any(x.get("mean") is not None for x in rounds):
                    out.append(f"<tr><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td><td>{c}</td>"
                               + "".join(f"<td>{cell(x)}</td>" for x in rounds) + "</tr>")
    return out


def render_html(summary: dict) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>MMST study</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             ".yes{background:#dfd}.no{background:#fdd}</style></head><body><h1>MMST study</h1>",
             f"<p>seeds {e(str(summary['seeds']))}; modes {e(', '.join(summary['modes']))}; runs with a report: "
             + e(", ".join(f"{m} {v}" for m, v in summary["runs"].items())) + "</p>",
             "<h2>Claims</h2><p>accuracy points, mean over seeds and 95% interval (Student's t); the weak "
             "method of a dataset is the one whose base model solved fewer of its training problems on that seed: "
             + e("; ".join(f"seed {seed}: " + ", ".join(f"{ds} {w['weak']} (by {w['by']})" for ds, w in per.items())
                           for seed, per in summary["weak_method"].items()))
             + "</p><table><tr><th>claim</th>"
             "<th>what</th><th>mean</th><th>95% interval</th><th>per seed</th><th>holds when</th><th>holds</th></tr>"]
    for c in summary["claims"]:
        verdict = {True: "yes", False: "no", None: "–"}[c["holds"]]
        ci = "" if c["ci95"] is None else f"[{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}]"
        mean = "" if c["mean"] is None else f"{c['mean']:+.1f}"
        parts.append(f"<tr><td>{e(c['name'])}</td><td>{e(c['description'])}</td><td>{mean}</td><td>{ci}</td>"
                     f"<td>{e(', '.join(f'{v:+.1f}' for v in c['values']))}</td><td>{e(c['rule'])}</td>"
                     f"<td class='{verdict}'>{verdict}</td></tr>")
    parts.append("</table><h2>Accuracy (%) per round</h2><p>greedy; mean ± sd over seeds [every seed]</p>")
    for mode, per in summary["accuracy"].items():
        parts.append(f"<h3>{e(mode)}</h3><table><tr><th>dataset</th><th>method</th><th>rounds</th></tr>")
        for ds, methods in per.items():
            for m, rounds in methods.items():
                parts.append(f"<tr><td>{e(ds)}</td><td>{m}</td>" + "".join(f"<td>{_fmt(x)}</td>" for x in rounds)
                             + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Training examples per round and source</h2><table><tr><th>mode</th><th>method</th>"
                 "<th>source</th><th>rounds</th></tr>")
    parts += _rows(summary["train_examples"], _fmt)
    parts.append("</table><h2>Correlation of the methods' solved problems (phi)</h2><p>train: on the round's "
                 "training samples, solved when any verified sample is (the paper's Table 4); test: greedy</p>"
                 "<table><tr><th>mode</th><th>dataset</th><th>on</th><th>rounds</th></tr>")
    parts += _rows(summary["correlation"], lambda x: "" if x.get("mean") is None else format(x["mean"], "+.2f"))
    parts.append("</table><h2>Both methods together (%)</h2><p>oracle: either right; vote: both methods' samples "
                 "pooled; choice: one method per problem</p><table><tr><th>mode</th><th>dataset</th><th></th>"
                 "<th>rounds</th></tr>")
    parts += _rows(summary["cross_method"], _fmt)
    parts.append(f"</table><h2>study.json</h2><pre>{e(json.dumps(summary, indent=1))}</pre></body></html>")
    return "\n".join(parts)
