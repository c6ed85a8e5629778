"""Every gin configurable of the project, registered once, at the edge.

Library code never reads gin: it takes plain arguments and dataclasses. The command modules import
this module and build those objects through the names registered here, which are the names gin
files bind (the task module registers its own, `tasks.*`):

    partitioning.MeshConfig.*, partitioning.initialize_distributed.*   (gin_configs/topologies)
    TrainConfig.*       fine-tuning (training.TrainConfig); in `mmst run` scoped:
                        bootstrap/TrainConfig.* (the base model from scratch) and finetune/TrainConfig.*
                        (every round); unscoped bindings apply to both
    mmst.Tasks.{problems, related, translation, bootstrap, known}   the SeqIO tasks a run reads
    mmst.RunConfig.{rounds, train_problems, eval_problems, feature_lengths, progress}
    mmst.ModeConfig.{mode, cap_to, finetune_from, max_per_problem, replay}
    mmst.ModelPolicy.{dtype, param_dtype, remat_policy, kv_cache_dtype}   every model of a run
    mmst.Generation.{num_samples, temperature, top_k, top_p, max_new_tokens, translation_samples,
                     translation_temperature, vote_samples, vote_temperature, batch_size,
                     chunk_rows, length_bucket, max_cache_length, seed}
    mmst.VerifierLimits.{timeout_s, memory_mb, lanes, restarts, allow_unprotected}
    mmst.Base.{hf_checkpoint, tokenizer, model_preset, model_overrides}
    mmst.run.{use_mesh_config, distributed, simulated_devices, title, reuse_base_from, check_memory}
    mmst.plan.target                                            `mmst plan`: auto | tpu | cpu
    mmst.study.{seeds, directory, modes}                        `mmst study` (mmst_jax.mmst.study)
    sample.*, train.*   `mmst sample`, `mmst train` (their parameters are listed where they are
                        registered, below)
"""

from __future__ import annotations

import dataclasses

import gin

from mmst_jax import distributed, sharding, training
from mmst_jax.mmst import config, modes, problems, stages, study
from mmst_jax.sampling import job as sampling_job
from mmst_jax.training import finetune as training_job

MeshConfig = gin.external_configurable(sharding.MeshConfig, module="partitioning")
initialize_distributed = gin.external_configurable(distributed.initialize_distributed,
                                                   module="partitioning")
TrainConfig = gin.external_configurable(training.TrainConfig, name="TrainConfig", module="training")
Tasks = gin.external_configurable(problems.TaskNames, name="Tasks", module="mmst")
RunConfig = gin.external_configurable(config.RunConfig, name="RunConfig", module="mmst")
ModeConfig = gin.external_configurable(modes.ModeConfig, name="ModeConfig", module="mmst")
ModelPolicy = gin.external_configurable(config.ModelPolicy, name="ModelPolicy", module="mmst")
Generation = gin.external_configurable(config.Generation, name="Generation", module="mmst")
VerifierLimits = gin.external_configurable(config.Limits, name="VerifierLimits", module="mmst")
Base = gin.external_configurable(stages.Base, name="Base", module="mmst")


@gin.configurable("run", module="mmst")
@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How `mmst run` starts: `use_mesh_config` places the model on the gin-bound
    partitioning.MeshConfig (a topology file); `distributed` starts jax.distributed first (several
    hosts); `simulated_devices` > 0 makes this process's CPU that many devices (set before JAX
    starts: a rehearsal of a slice's mesh on one machine); `reuse_base_from` is a run directory
    whose round 0 (the base model) to start from; `check_memory` compiles the run's programs for
    the mesh before the first sample, on accelerators that report their memory, and refuses a
    config whose programs do not fit."""

    use_mesh_config: bool = False
    distributed: bool = False
    simulated_devices: int = 0
    title: str = "MMST run"
    reuse_base_from: str | None = None
    check_memory: bool = True


def run_config() -> config.RunConfig:
    return RunConfig(mode=ModeConfig(), policy=ModelPolicy(), generation=Generation(), limits=VerifierLimits())


def train_config(scope: str | None = None) -> training.TrainConfig:
    if scope is None:
        return TrainConfig()
    with gin.config_scope(scope):
        return TrainConfig()


def base() -> stages.Base:
    return Base(train=train_config("bootstrap"))


def mesh_config():
    return MeshConfig()


def macro(name: str, default=None):
    """A gin macro's value if bound (--gin.NAME=VALUE), else `default`."""
    try:
        return gin.query_parameter(f"%{name}")
    except ValueError:
        return default


def run_dir(default: str = "runs/mmst") -> str:
    """The RUN_DIR macro if bound (--gin.RUN_DIR="'path'"), else `default`."""
    return str(macro("RUN_DIR", default))


# sample.{hf_checkpoint, tokenizer, model_preset, num_samples, temperature, top_k, top_p,
#         max_new_tokens, stop_strings, batch_size, max_cache_length, share_prefix, mesh_shape,
#         seed, round_index}; the prompts and the output directory come from the command line.
sample = gin.external_configurable(sampling_job.sample, name="sample",
                                   denylist=["prompts_file", "output_dir", "task", "split"])


# --- training and planning (`mmst train`, `mmst plan`) ------------------------------------------

# train.{mixture_or_task_name, task_feature_lengths, pack, model_preset, hf_checkpoint, tokenizer,
#        dtype, param_dtype, remat_policy, mesh_shape, train_config, export_model, workdir}; the
#        JSONL data file comes from the command line.
train = gin.external_configurable(training_job.finetune, name="train", module="mmst", denylist=["data_file"])


@gin.configurable("plan", module="mmst")
@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """`mmst plan`: `target` of compilation, 'auto' (tpu when libtpu is installed and the
    topology names its chip layout), 'tpu' or 'cpu' (simulated host devices)."""

    target: str = "auto"


Study = gin.external_configurable(study.StudyConfig, name="study", module="mmst")
