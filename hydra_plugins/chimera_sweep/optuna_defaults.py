"""``hydra/sweeper=optuna`` with chimera-sweep's defaults: maximise the job's objective over num_gpu × num_ctx × temperature.

The plugin's own defaults minimise and search nothing, so the issue's command
``python -m sweep -m hydra/sweeper=optuna hydra.sweeper.n_trials=20`` would
minimise throughput.  A YAML of the same name cannot extend the plugin's schema
(Hydra refuses a same-name schema with a defaults list), so the plugin's entry
is replaced by a subclass with other defaults.  Hydra re-imports every plugin
module while scanning, in path order, so the replacement happens in a
search-path plugin's hook, which Hydra calls after the scan.  Every key of
hydra-optuna-sweeper stays available; nothing happens without the ``[optuna]`` extra.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin

# The default search space; CLI arguments add to or replace these, a fixed value
# (chimera.num_gpu=80) takes a parameter out of the search.
SEARCH_SPACE = {
    "chimera.num_gpu": "choice(0, 20, 40, 60, 80, 100, 120)",
    "chimera.num_ctx": "choice(256, 512, 1024, 2048, 4096)",
    "chimera.temperature": "choice(0.2, 0.4, 0.6, 0.8, 1.0)",  # discrete: the grid sampler takes it too
}


def _register() -> None:
    try:
        from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    except ImportError:  # the [optuna] extra is not installed
        return

    @dataclass
    class ChimeraOptunaSweeperConf(OptunaSweeperConf):
        direction: Any = "maximize"      # the job returns throughput (objective.*)
        n_jobs: int = 1                  # trials per batch: more only with a parallel launcher
        params: Optional[Dict[str, str]] = field(default_factory=lambda: dict(SEARCH_SPACE))

    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=ChimeraOptunaSweeperConf,
                                 provider="chimera-sweep")


class ChimeraOptunaDefaults(SearchPathPlugin):
    """Adds no search path: its hook runs after Hydra's plugin scan, the moment to replace the entry."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        _register()
