"""`mmst run` with its run directory on gs://, against a real GCS emulator (fake-gcs-server, started
by the `gcs` fixture of conftest.py): killed during sampling, verification and a checkpoint write,
and refused permission half way, then resumed, it ends with the records and metrics of an
uninterrupted local run; a bucket that does not exist is one clear error, and nothing is written."""

import json
import re
import signal

import pytest

from micro_run import mmst_run, results


def gcs_results(url: str):
    """What `micro_run.results` reads of a local run, read from a gs:// run directory: every
    record file (hidden ones too, so that leftovers count), report/metrics.json, the summaries."""
    from etils import epath

    from mmst_jax import storage

    fs = storage.filesystem(url)
    prefix = url[len("gs://"):].rstrip("/") + "/"
    records, summaries = {}, {}
    for name in fs.find(prefix):
        rel = name[len(prefix):]
        path = epath.Path(url) / rel
        if rel.endswith(".jsonl"):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for r in rows:
                r.pop("elapsed_ms", None)
            records[rel] = rows
        elif re.fullmatch(r"round_\d+/eval/summary\.json", rel):
            summaries[rel] = json.loads(path.read_text())
    metrics = json.loads((epath.Path(url) / "report" / "metrics.json").read_text())
    return records, metrics, summaries


def objects(url: str) -> list[str]:
    from mmst_jax import storage

    prefix = url[len("gs://"):].rstrip("/") + "/"
    return [name[len(prefix):] for name in storage.filesystem(url).find(prefix)]


@pytest.mark.slow
def test_run_on_gcs_killed_refused_and_resumed_matches_a_local_run(gcs, micro_reference):
    url = f"gs://{gcs.bucket}/killed"
    # Round 0's evaluation samples 4 batches, so the 6th batch is round 1's sampling; fine-tuning
    # saves a checkpoint every 4 steps (asynchronously), so its 4th step is killed while orbax is
    # writing that checkpoint to the bucket.
    for fault in ("sample.batch@6=kill", "verify.record@30=kill", "train.step@4=kill"):
        proc = mmst_run(url, faults=fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-2000:])
    # The bucket then refuses writes to round 1's evaluation: one clear error naming the object,
    # and no marker that a resumed run would trust.
    gcs.gate.refuse(gcs.bucket, prefix="killed/round_001/eval/", writes_only=True)
    try:
        proc = mmst_run(url)
    finally:
        gcs.gate.allow_all()
    assert proc.returncode == 1, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("mmst run: error:")]
    assert len(error) == 1 and "permission denied" in error[0], proc.stderr[-3000:]
    assert re.search(rf"gs://{gcs.bucket}/killed/round_001/eval/\S+", error[0]), error
    assert "round_001/checkpoint/_SUCCESS" in objects(url)
    assert "round_001/eval/_SUCCESS" not in objects(url)

    proc = mmst_run(url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert gcs_results(url) == results(micro_reference)
    names = objects(url)
    for stage in ("samples", "verified", "translated", "train", "checkpoint", "eval"):
        assert f"round_001/{stage}/_SUCCESS" in names, stage
    assert "round_001/checkpoint/model/config.json" in names
    assert "round_001/checkpoint/model/params/commit_success.txt" in names  # orbax's commit on gs://
    assert not any("/.work/" in n or ".tmp" in n or n.endswith(".partial") or ".chunks/" in n for n in names)
    assert any(n.startswith("report/tensorboard/events.out.tfevents") for n in names)
    assert "report/report.html" in names and "config.gin" in names


def test_run_into_a_bucket_that_does_not_exist_is_one_clear_error(gcs):
    proc = mmst_run("gs://no-such-bucket-mmst/run")
    assert proc.returncode == 1, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("mmst run: error:")]
    assert error == [("mmst run: error: gs://no-such-bucket-mmst/run: the bucket "
                                  "gs://no-such-bucket-mmst does not exist; create it (gcloud storage "
                                  "buckets create gs://no-such-bucket-mmst) or fix the path")], proc.stderr[-3000:]
    from mmst_jax import storage

    assert not storage.filesystem("gs://x").exists("no-such-bucket-mmst")  # nothing created it
