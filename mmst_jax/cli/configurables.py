"""Every gin configurable of the project, registered once, at the edge.

Library code never reads gin: it takes plain arguments and dataclasses. The command modules import
this module and build those objects through the names registered here, which are the names gin
files bind:

    partitioning.MeshConfig.*, partitioning.initialize_distributed.*   (gin_configs/topologies)
    mmst.RunConfig.{rounds, train_problems, eval_problems, feature_lengths, progress}
    mmst.ModeConfig.{mode, cap_to, finetune_from, max_per_problem, replay}
    mmst.Generation.{num_samples, temperature, top_k, top_p, max_new_tokens, translation_samples,
                     translation_temperature, vote_samples, vote_temperature, batch_size, ...}
    mmst.VerifierLimits.{timeout_s, memory_mb, lanes, restarts}
    mmst.Base.{hf_checkpoint, tokenizer, model_preset, model_overrides}
    mmst.TrainConfig.*  scoped: bootstrap/mmst.TrainConfig.* (the base model from scratch) and
                        finetune/mmst.TrainConfig.* (every round); unscoped bindings apply to both
"""

from __future__ import annotations

import gin

import tasks  # noqa: F401  (registers the tasks.* configurables: world, bootstrap, data_dir)
import tasks.synthetic.tasks  # noqa: F401
from mmst_jax import distributed, sharding, training
from mmst_jax.mmst import config, modes, stages

MeshConfig = gin.external_configurable(sharding.MeshConfig, module="partitioning")
initialize_distributed = gin.external_configurable(distributed.initialize_distributed,
                                                   module="partitioning")
RunConfig = gin.external_configurable(config.RunConfig, name="RunConfig", module="mmst")
ModeConfig = gin.external_configurable(modes.ModeConfig, name="ModeConfig", module="mmst")
Generation = gin.external_configurable(config.Generation, name="Generation", module="mmst")
VerifierLimits = gin.external_configurable(config.Limits, name="VerifierLimits", module="mmst")
Base = gin.external_configurable(stages.Base, name="Base", module="mmst")
TrainConfig = gin.external_configurable(training.TrainConfig, name="TrainConfig", module="mmst")


def run_config() -> config.RunConfig:
    return RunConfig(mode=ModeConfig(), generation=Generation(), limits=VerifierLimits())


def train_config(scope: str) -> training.TrainConfig:
    with gin.config_scope(scope):
        return TrainConfig()


def base() -> stages.Base:
    return Base(train=train_config("bootstrap"))


def mesh_config():
    return MeshConfig()


def run_dir(default: str = "runs/mmst") -> str:
    """The RUN_DIR macro if bound (--gin.RUN_DIR="'path'"), else `default`."""
    try:
        return str(gin.query_parameter("%RUN_DIR"))
    except ValueError:
        return default
