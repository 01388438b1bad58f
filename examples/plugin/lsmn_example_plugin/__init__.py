"""An example plugin for LSMN Studio: one object of each kind a plugin can add, each registered by
an entry point in this package's pyproject.toml (see README.md beside it).

- block.py: `rezero`, a residual MLP whose update starts switched off (a block, lsmn.blocks)
- rings.py: `rings`, points on noisy concentric rings (a data set, lsmn.datasets)
- scheme.py: `task_gains`, hard sharing with a learned gain per task and block (a scheme, lsmn.schemes)
- view.py: the task_gains scheme's part of the app (an app view, lsmn.app_views)
"""
