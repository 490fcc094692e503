"""Study files: schema, validation on load, expansion into grid cells, and identity.

A study file is YAML. Every key except `name`, `dataset`, `model` and `optimizers` is optional::

    name: my_study               # required; the study's name in the results database
    description: free text
    dataset: digits              # robustbench_opt.data.DATASETS: digits, cifar10, cifar100
    data_dir: data/cifar10       # CIFAR: directory with the torchvision files (relative to the cwd)
    download: false              # CIFAR: allow downloading into data_dir
    val_fraction: 0.0            # share of the training split held out for validation, in [0, 1)
    model: simple_cnn            # robustbench_opt.models.model_names()
    recipe:                      # any robustbench_opt.config.Recipe field; others keep defaults
      epochs: 10
      schedule: cosine
    variants:                    # named recipe overrides (ablations); default: "default": {}
      baseline: {}
      trivialaugment: {augment: [crop_flip, trivialaugment]}
    optimizers:                  # a registry name, or a mapping:
      - adam
      - name: sam                # registry name (robustbench-opt optimizers lists them)
        label: sam_adam          # display name, unique in the study (default: name)
        kwargs: {base: adam, rho: 0.05}   # fixed optimizer keywords
        lrs: [1.0e-3]            # own grid, replaces the study's lrs for this entry
        weight_decays: [0.0]     # own grid, replaces the study's weight_decays
        epochs: 50               # own epoch budget, replaces recipe.epochs (all variants)
    lrs: [0.1, 0.01, 0.001]      # a list, or log-spaced: {log_range: [1.0e-4, 1.0e-1], num: 4}
    weight_decays: [0.0, 5.0e-4]
    seeds: [0, 1]                # default [0]
    resources: {cpus: 1, gpus: 0, packing: auto, executor: auto}   # per trial; gpus: 0 (CPU),
                                 # a fraction in (0, 1], or auto; packing: auto | off | most
                                 # cells per trial; executor: auto | local | ray
    max_concurrent: 4            # at most this many trials at once (default: as resources allow)

Grid cells are optimizer x variant x lr x weight decay x seed. Numbers such as `1e-3` are read as
floats (plain YAML 1.1 would read them as strings). Every error is one line: file, line, key path,
what is wrong and the valid choices.

Modules: `study` (StudySpec and its cells), `yaml_lines` (YAML with the line of every key),
`schema` (the table of keys -> checker, and `load_study`), `checks` (the checkers), `identity`
(what a study measures, `spec_hash`, `diff_specs`).
"""

from __future__ import annotations

from robustbench_opt.spec.identity import RUN_ONLY_KEYS, diff_specs, identity, spec_hash
from robustbench_opt.spec.schema import load_study
from robustbench_opt.spec.study import OptimizerSpec, Resources, StudySpec, log_range

__all__ = [
    "RUN_ONLY_KEYS",
    "OptimizerSpec",
    "Resources",
    "StudySpec",
    "diff_specs",
    "identity",
    "load_study",
    "log_range",
    "spec_hash",
]
