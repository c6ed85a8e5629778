"""The host-side verifier: answer comparison, sandboxed code execution, the verifier over records.
No JAX here. Import the modules themselves; this package imports nothing on its own.

  answers    extract_answer, normalize_answer, answers_match, numbers_match, gold_answer,
             answer_kind, format_number (exact, positional canonical numbers)
  copies     copied_code, copied_text, copied_reason (answers stated, not computed),
             constant_code_examples (`python -m mmst_jax.verify.copies RUN_DIR`)
  vote       majority_vote, vote_records
  results    Limits, ExecResult, the result channel's parsing and the status of a run
  sandbox    Sandbox (warm worker, lanes, protections; refuses to run without all of them
             unless allow_unprotected: UnprotectedSandboxError), run_programs
  allowlist  the seccomp allow-list (ALLOWED), built with libseccomp (build_filter)
  verifier   verify_records, verify_text, verified_from_exec
  files      verify_files, verify_part (resumable, crash-surviving verification of sample files),
             read_samples, check_sample, summarize

Inside the worker process: worker (set-up once, then lanes), lane (one program at a time),
harness (confinement, then the program), isolation (namespaces, mounts, capabilities, seccomp),
cgroups (made and removed by the host). The command `mmst verify` is mmst_jax/cli/verify.py.
"""
