"""The report of a run, rebuilt from the stage markers after every round.

    report/metrics.json    {"mode", "rounds": [ROUND, ...]} exactly as docs/architecture.md says; a
                           round that added known solutions to its samples (`mmst.Tasks.known`) also
                           has `"known": {METHOD: {"correct", "total", "train"}}` (verified known
                           solutions, and the training examples made of them)
    report/details.json    what metrics.json has no room for: overlap of solved problems and its
                           correlation (test, and `train_overlap` on the round's own training
                           samples, known solutions left out: solved when any verified sample
                           is), the cross-method oracle, pooled
                           vote and per-problem choice (`cross`), verifier losses, training sources, copied answers kept
                           out of training and programs run without every protection, per round
    report/accuracy.png    accuracy per round per method (one panel per dataset)
    report/overlap.png     problems solved by both / only text / only code / neither, per round
    report/report.html     the figures, the tables and the configuration
    report/tensorboard/    the same scalars as TensorBoard events

Everything here is a function of the done stages (their markers, and for the copied and
unprotected counts the verified records their markers vouch for), so a resumed run writes the
same metrics.json as one never interrupted.
"""

from __future__ import annotations

import html
import json
import logging
import os
from typing import Any

from etils import epath

from mmst_jax.mmst import metrics as metrics_lib
from mmst_jax.mmst import modes, rundir
from mmst_jax.records import DIRECTIONS, METHODS, read_parts, remove, write_json, write_text

log = logging.getLogger(__name__)


def _marker(run_dir: rundir.RunDir, r: int, stage: str) -> dict | None:
    state = rundir.stage_state(run_dir.stage(r, stage))
    return state.marker if state.done else None


def _verified_records(run_dir: rundir.RunDir, r: int, verified: dict | None,
                      translated: dict | None) -> tuple[list[dict], list[dict], list[dict]]:
    """The verified samples, verified translations and verified evaluation samples of round r
    (of the stages that are done; the evaluation's is)."""
    own = [x for m in METHODS for x in read_parts(run_dir.stage(r, "verified") / m)] if verified else []
    trans = ([x for d in DIRECTIONS for x in read_parts(run_dir.stage(r, "translated") / d / "verified")]
             if translated else [])
    evaluated = [x for d in sorted((run_dir.stage(r, "eval") / "verified").glob("*")) for x in read_parts(d)]
    return own, trans, evaluated


def collect(run_dir: rundir.RunDir, mode: str) -> tuple[dict, dict]:
    """(metrics, details) of every round whose evaluation is done, in order."""
    rounds, details = [], []
    r = 0
    while True:
        ev = _marker(run_dir, r, "eval")
        if ev is None:
            break
        train = _marker(run_dir, r, "train")
        verified = _marker(run_dir, r, "verified")
        translated = _marker(run_dir, r, "translated")
        v_info = verified["info"]["verified"] if verified else {}
        t_info = translated["info"]["translated"] if translated else {}
        own, trans, evaluated = _verified_records(run_dir, r, verified, translated)
        rounds.append({
            "round": r,
            "eval": ev["info"]["eval"],
            "verified": {m: {"correct": v_info[m]["correct"], "total": v_info[m]["total"]}
                         for m in METHODS if m in v_info},
            "translated": {d: {"kept": t_info[d]["kept"], "total": t_info[d]["total"]} for d in DIRECTIONS
                           if d in t_info},
            "train_examples": dict(train["info"].get("train_examples", {})) if train else {},
        })
        known = verified["info"].get("known") if verified else None
        if known:
            trained = train["info"].get("known", {}) if train else {}
            rounds[-1]["known"] = {m: {"correct": known.get(m, {}).get("correct", 0),
                                       "total": known.get(m, {}).get("total", 0), "train": trained.get(m, 0)}
                                   for m in METHODS}
        details.append({
            "round": r,
            "overlap": ev["info"].get("overlap", {}),
            "cross": ev["info"].get("cross", {}),
            "train_overlap": metrics_lib.overlap([x for x in own if not x.get("known")], any_sample=True),
            "lost": {"verified": {m: v_info[m].get("lost", 0) for m in v_info},
                     "translated": translated["info"].get("lost", {}) if translated else {},
                     "eval": ev["info"].get("lost", 0)},
            "train_sources": train["info"].get("sources", {}) if train else {},
            "copied": modes.copied_counts(own, trans),
            "unprotected": sum(1 for x in own + trans + evaluated if x.get("unprotected")),
        })
        r += 1
    return {"mode": mode, "rounds": rounds}, {"mode": mode, "rounds": details}


def write_report(run_dir: rundir.RunDir, mode: str, title: str = "MMST run") -> dict:
    """Writes every report file; returns the metrics."""
    metrics, details = collect(run_dir, mode)
    out = run_dir.report
    write_json(out / "metrics.json", metrics)
    write_json(out / "details.json", details)
    try:
        _plots(metrics, details, out)
    except Exception as e:  # noqa: BLE001 — a missing plotting backend must not stop a run
        log.warning("plots not written: %s", e)
    _tensorboard(metrics, details, out / "tensorboard")
    config = run_dir.config_path.read_text() if run_dir.config_path.exists() else ""
    write_text(out / "report.html", render_html(metrics, details, config, title))
    return metrics


def _datasets(metrics: dict) -> list[str]:
    names = []
    for r in metrics["rounds"]:
        for d in r["eval"]:
            if d not in names:
                names.append(d)
    return sorted(names, key=lambda d: (d != "all", d))


def _plots(metrics: dict, details: dict, out: epath.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in metrics["rounds"]]
    datasets = _datasets(metrics)
    if not rounds or not datasets:
        return
    cols = min(4, len(datasets))
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        for method, style in (("text", "o-"), ("code", "s--")):
            ys = [r["eval"].get(dataset, {}).get(method, {}).get("accuracy") for r in metrics["rounds"]]
            if any(y is not None for y in ys):
                ax.plot(rounds, [100 * y if y is not None else float("nan") for y in ys], style, label=method)
        ax.set_title(dataset, fontsize=9)
        ax.set_xticks(rounds)
        ax.set_ylim(0, 100)
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    fig.suptitle(f"accuracy per round ({metrics['mode']})", fontsize=10)
    fig.tight_layout()
    _savefig(fig, out / "accuracy.png")
    plt.close(fig)

    key = "all" if any("all" in r["overlap"] for r in details["rounds"]) else None
    if key is None:
        names = sorted({d for r in details["rounds"] for d in r["overlap"]})
        key = names[0] if names else None
    if key is None:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bottoms = [0.0] * len(rounds)
    for part, color in (("both", "#4c72b0"), ("only_text", "#55a868"), ("only_code", "#c44e52"),
                        ("neither", "#cccccc")):
        ys = [r["overlap"].get(key, {}).get(part, 0) for r in details["rounds"]]
        ax.bar(rounds, ys, bottom=bottoms, label=part.replace("_", " "), color=color)
        bottoms = [b + y for b, y in zip(bottoms, ys)]
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.set_ylabel("problems")
    ax.set_title(f"solved problems by method ({key})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    _savefig(fig, out / "overlap.png")
    plt.close(fig)


def _savefig(fig, path: epath.Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def _tensorboard(metrics: dict, details: dict, directory: epath.Path) -> None:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return
    remove(directory)
    with SummaryWriter(os.fspath(directory)) as writer:
        for r, d in zip(metrics["rounds"], details["rounds"]):
            step = r["round"]
            for dataset, per in r["eval"].items():
                for method, m in per.items():
                    writer.add_scalar(f"eval/{dataset}/{method}/accuracy", m["accuracy"], step)
                    if m.get("maj_at_k") is not None:
                        writer.add_scalar(f"eval/{dataset}/{method}/maj_at_k", m["maj_at_k"], step)
            for method, v in r["verified"].items():
                writer.add_scalar(f"verified/{method}/correct", v["correct"], step)
                writer.add_scalar(f"verified/{method}/total", v["total"], step)
            for direction, t in r["translated"].items():
                writer.add_scalar(f"translated/{direction}/kept", t["kept"], step)
            for method, n in r["train_examples"].items():
                writer.add_scalar(f"train_examples/{method}", n, step)
            for method, k in r.get("known", {}).items():
                for what in ("correct", "total", "train"):
                    writer.add_scalar(f"known/{method}/{what}", k[what], step)
            for dataset, o in d["overlap"].items():
                if o.get("correlation") is not None:
                    writer.add_scalar(f"overlap/{dataset}/correlation", o["correlation"], step)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _copied_cell(d: dict) -> str:
    copied = d.get("copied", {})
    return " / ".join(str(sum(copied.get(s, {}).values())) for s in ("self", "translation"))


def render_html(metrics: dict, details: dict, config: str, title: str = "MMST run") -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:85%}</style></head><body>",
             f"<h1>{e(title)}</h1><p>mode: <b>{e(metrics['mode'])}</b>, rounds evaluated: "
             f"{len(metrics['rounds'])}</p>",
             "<h2>Accuracy (%) per round</h2><p>greedy accuracy, maj@k in brackets</p>"]
    datasets = _datasets(metrics)
    parts.append("<table><tr><th>dataset</th><th>method</th>"
                 + "".join(f"<th>round {r['round']}</th>" for r in metrics["rounds"]) + "</tr>")
    for dataset in datasets:
        for method in METHODS:
            cells = []
            for r in metrics["rounds"]:
                m = r["eval"].get(dataset, {}).get(method)
                cells.append("" if m is None else _pct(m["accuracy"])
                             + (f" ({_pct(m['maj_at_k'])})" if m.get("maj_at_k") is not None else "")
                             + f" <small>n={m['n']}</small>")
            if any(cells):
                parts.append(f"<tr><td>{e(dataset)}</td><td>{method}</td>"
                             + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table><img src='accuracy.png' alt='accuracy per round'>")
    known = any("known" in r for r in metrics["rounds"])
    parts.append("<h2>Data per round</h2>"
                 + ("<p>known: known solutions added to the round's samples (correct/total verified, "
                    "and training examples made of them); verified counts include them</p>" if known else "")
                 + "<table><tr><th>round</th>"
                 + "".join(f"<th>verified {m}</th>" for m in METHODS)
                 + "".join(f"<th>{d.replace('_', ' ')} kept</th>" for d in DIRECTIONS)
                 + "".join(f"<th>train {m}</th>" for m in METHODS)
                 + ("".join(f"<th>known {m}</th>" for m in METHODS) if known else "")
                 + "<th>lost to the verifier</th><th>copied, kept out (self / translation)</th></tr>")
    for r, d in zip(metrics["rounds"], details["rounds"]):
        lost = d["lost"]
        n_lost = sum(lost["verified"].values()) + sum(lost["translated"].values()) + lost["eval"]
        parts.append(f"<tr><td>{r['round']}</td>"
                     + "".join(f"<td>{r['verified'][m]['correct']}/{r['verified'][m]['total']}</td>"
                               if m in r["verified"] else "<td></td>" for m in METHODS)
                     + "".join(f"<td>{r['translated'][t]['kept']}/{r['translated'][t]['total']}</td>"
                               if t in r["translated"] else "<td></td>" for t in DIRECTIONS)
                     + "".join(f"<td>{r['train_examples'].get(m, '')}</td>" for m in METHODS)
                     + ("".join(f"<td>{r['known'][m]['correct']}/{r['known'][m]['total']}, train "
                                f"{r['known'][m]['train']}</td>" if "known" in r else "<td></td>" for m in METHODS)
                        if known else "")
                     + f"<td>{n_lost}</td><td>{_copied_cell(d)}</td></tr>")
    unprotected = [d["round"] for d in details["rounds"] if d.get("unprotected")]
    if unprotected:
        parts.append(f"<p><b>WARNING: model-written programs ran without every sandbox protection "
                     f"(allow_unprotected) in round(s) {', '.join(map(str, unprotected))}.</b></p>")
    parts.append("</table><h2>Overlap of solved problems (greedy)</h2><table><tr><th>round</th><th>dataset</th>"
                 "<th>both</th><th>only text</th><th>only code</th><th>neither</th><th>correlation</th></tr>")
    for d in details["rounds"]:
        for dataset, o in d["overlap"].items():
            corr = "–" if o["correlation"] is None else f"{o['correlation']:+.2f}"
            parts.append(f"<tr><td>{d['round']}</td><td>{e(dataset)}</td><td>{o['both']}</td><td>{o['only_text']}"
                         f"</td><td>{o['only_code']}</td><td>{o['neither']}</td><td>{corr}</td></tr>")
    parts.append("</table><img src='overlap.png' alt='overlap per round'>")
    parts.append("<h2>Overlap on the training samples (solved: any verified sample correct)</h2><table><tr>"
                 "<th>round</th><th>dataset</th><th>both</th><th>only text</th><th>only code</th><th>neither</th>"
                 "<th>correlation</th></tr>")
    for d in details["rounds"]:
        for dataset, o in d.get("train_overlap", {}).items():
            corr = "–" if o["correlation"] is None else f"{o['correlation']:+.2f}"
            parts.append(f"<tr><td>{d['round']}</td><td>{e(dataset)}</td><td>{o['both']}</td><td>{o['only_text']}"
                         f"</td><td>{o['only_code']}</td><td>{o['neither']}</td><td>{corr}</td></tr>")
    parts.append("</table><h2>Both methods together (%)</h2><p>oracle: either method right; vote: both methods' "
                 "samples pooled; choice: one method per problem, the more self-consistent (picks: how often "
                 "it took each)</p><table><tr><th>round</th><th>dataset</th><th>oracle</th><th>vote</th>"
                 "<th>choice</th>" + "".join(f"<th>picks {m}</th>" for m in METHODS) + "<th>n</th></tr>")
    for d in details["rounds"]:
        for dataset, c in d.get("cross", {}).items():
            parts.append(f"<tr><td>{d['round']}</td><td>{e(dataset)}</td><td>{_pct(c['oracle'])}</td>"
                         f"<td>{_pct(c['vote'])}</td><td>{_pct(c['choice'])}</td>"
                         + "".join(f"<td>{_pct(c['picks'][m])}</td>" for m in METHODS) + f"<td>{c['n']}</td></tr>")
    parts.append("</table>")
    parts.append(f"<h2>Configuration</h2><pre>{e(config)}</pre>")
    parts.append(f"<h2>metrics.json</h2><pre>{e(json.dumps(metrics, indent=1))}</pre></body></html>")
    return "\n".join(parts)
