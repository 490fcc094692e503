"""The trial engine: trains a list of cells (one cell, or a pack that trains as one).

`engine.train_cells` is the engine, `engine.run_trial` its single-cell call; `build.build_cells`
builds what cells train for the engine, the planner's calibration and `bench` alike. Nothing
here knows Ray, SQL or the CLI. This package module imports nothing, so that `hooks` (the
callback types, torch-free) can be imported by the runner's driver without torch.
"""
