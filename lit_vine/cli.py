"""The ``lit-vine`` command: a LightningCLI whose runs are YAML files in ``configs/``."""

from __future__ import annotations

import sys
import warnings

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from lit_vine.policy_module import ConfigError


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


def main(args: list[str] | None = None) -> None:
    # One RL iteration is an IterableDataset pass of known length, on purpose.
    warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    try:
        LitVineCLI(args)
    except ConfigError as err:
        print(f"lit-vine: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
