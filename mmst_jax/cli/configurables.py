"""The library classes that gin files may configure, registered once, at the edge.

Library code never reads gin; the command modules import this module and build these objects
through the registered names, so topology files can bind e.g. `partitioning.MeshConfig.shape`.
"""

import gin

from mmst_jax import sharding

MeshConfig = gin.external_configurable(sharding.MeshConfig, module="partitioning")
initialize_distributed = gin.external_configurable(sharding.initialize_distributed,
                                                   module="partitioning")
