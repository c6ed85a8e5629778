"""The resumable verification of sample files (mmst_jax.verify.files) that the MMST loop uses:
resumption from a partial file, a crashed verifier restarted, what stays unverified counted as lost."""

import json

from mmst_jax import faults
from mmst_jax import records as records_lib
from mmst_jax.verify import files


def _samples(n):
    out = []
    for i in range(n):
        code = i % 2 == 1
        out.append({"problem_id": f"p{i}", "dataset": "synthetic_change", "method": "code" if code else "text",
                    "sample_index": 0, "round": 1, "prompt": "Q", "gold": str(i), "seed": 0,
                    "completion": f"def solution():\n    return {i}\n" if code else f" x. The answer is {i}."})
    return out


def test_verifier_crash_is_counted_as_lost(tmp_path, monkeypatch):
    src = tmp_path / "samples.jsonl"
    records_lib.write_jsonl(src, _samples(8))
    monkeypatch.setenv(faults.ENV, "verify.record@4+=crash")  # fails on every attempt from the 4th on
    faults._counts.clear()
    out = files.verify_part(src, tmp_path / "verified.jsonl", restarts=1, lanes=2, progress=False)
    records = records_lib.read_jsonl(out)
    assert [r["problem_id"] for r in records] == [f"p{i}" for i in range(8)]  # every record, in order
    lost = [r for r in records if r.get("lost")]
    assert len(lost) == 5  # 3 verified before the crash, the restart crashed at once
    assert all(r["status"] == "error" and r["correct"] is False and "InjectedFault" in r["detail"] for r in lost)
    assert files.summarize(records)["text"]["lost"] + files.summarize(records)["code"]["lost"] == 5
    assert not (tmp_path / ".verified.jsonl.partial").exists()
    faults._counts.clear()


def test_verifier_restart_recovers_and_resume_reuses(tmp_path, monkeypatch):
    src = tmp_path / "samples.jsonl"
    records_lib.write_jsonl(src, _samples(6))
    monkeypatch.setenv(faults.ENV, "verify.record@3=crash")  # one crash, then the restart finishes
    faults._counts.clear()
    records = records_lib.read_jsonl(files.verify_part(src, tmp_path / "v.jsonl", restarts=1, lanes=2,
                                                         progress=False))
    assert not any(r.get("lost") for r in records)
    assert all(r["correct"] for r in records)
    # a partial file left by a killed run is reused: only what is missing is verified
    monkeypatch.delenv(faults.ENV)
    partial = tmp_path / ".w.jsonl.partial"
    partial.write_text(json.dumps({**records[0], "detail": "from the partial file"}) + "\n" + '{"torn')
    again = records_lib.read_jsonl(files.verify_part(src, tmp_path / "w.jsonl", lanes=2, progress=False))
    assert again[0]["detail"] == "from the partial file"
    assert [r["problem_id"] for r in again] == [r["problem_id"] for r in records]
    faults._counts.clear()
