"""The ``lit-vine`` command: a LightningCLI whose runs are YAML files in ``configs/``."""

from __future__ import annotations

import sys
import warnings

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from lit_vine.algorithms import Algorithm
from lit_vine.errors import ConfigError


class LitVineCLI(LightningCLI):
    """``lit-vine fit|validate|test --config configs/<run>.yaml [--section.field value ...]``."""

    def __init__(self, args=None) -> None:
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"num_sanity_val_steps": 0},
            args=args,
        )


def algorithm_names() -> list[str]:
    found, todo = [], list(Algorithm.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.append(cls.__name__)
        todo += cls.__subclasses__()
    return found


def check_algorithm_flag(args: list[str]) -> None:
    """``--model.algorithm NAME`` must name a known algorithm; say which ones are."""
    for i, arg in enumerate(args):
        name = arg.split("=", 1)[1] if arg.startswith("--model.algorithm=") else args[i + 1] if arg == "--model.algorithm" and i + 1 < len(args) else None
        if name is not None and "." not in name and not name.startswith("{") and name not in algorithm_names():
            raise ConfigError(f"--model.algorithm: unknown algorithm {name!r}; valid: {', '.join(algorithm_names())}")


def root_config_error(err: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception that Lightning or jsonargparse wrapped, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(args: list[str] | None = None) -> None:
    # One RL iteration is an IterableDataset pass of known length, on purpose.
    warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    try:
        check_algorithm_flag(sys.argv[1:] if args is None else args)
        LitVineCLI(args)
    except Exception as err:
        config_error = root_config_error(err)
        if config_error is None:
            raise
        print(f"lit-vine: error: {config_error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
