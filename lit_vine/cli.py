"""The ``lit-vine`` command: a LightningCLI whose runs are YAML files in ``configs/``."""

from __future__ import annotations

import re
import signal
import sys
import warnings

from lightning import LightningDataModule, LightningModule
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_vine.algorithms import algorithm_class_name, concrete_algorithms
from lit_vine.errors import ConfigError
from lit_vine.tasks.loading import DataError


class LitVineCLI(LightningCLI):
    """``lit-vine fit|validate|test --config configs/<run>.yaml [--section.field value ...]``."""

    def __init__(self, args=None, **kwargs) -> None:
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"num_sanity_val_steps": 0},
            args=args,
            **kwargs,
        )

    def init_parser(self, **kwargs):
        # Parse errors raise instead of printing the whole usage; main() prints one short message.
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)


def canonical_algorithm_flag(args: list[str]) -> list[str]:
    """``--model.algorithm NAME`` with NAME as its class name (``vc-ppo`` -> ``VCPPO``); an unknown
    name stops with the list of the algorithms there are."""
    args = list(args)
    for i, arg in enumerate(args):
        at, name = (i, arg.split("=", 1)[1]) if arg.startswith("--model.algorithm=") else (i + 1, args[i + 1]) if arg == "--model.algorithm" and i + 1 < len(args) else (None, None)
        if name is None or "." in name or name.startswith("{"):  # a class path or a whole dict: jsonargparse's
            continue
        cls = algorithm_class_name(name)
        if cls is None:
            raise ConfigError(f"--model.algorithm: unknown algorithm {name!r}; valid: {', '.join(concrete_algorithms())}")
        args[at] = f"--model.algorithm={cls}" if at == i else cls
    return args


def root_config_error(err: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception that Lightning or jsonargparse wrapped, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (ConfigError, DataError)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def concise_parse_error(message: str) -> str:
    """jsonargparse's "does not validate against any of the Union subtypes" report, cut down to
    the class it was meant for and why that class refused the value."""
    if "Does not validate against any of the Union subtypes" not in message:
        return message
    lines, kept, indent = message.splitlines(), [], None
    for line in lines:
        depth = len(line) - len(line.lstrip())
        if line.strip().startswith("- Problem with given class_path"):
            indent = depth
            kept.append(line.strip()[2:])
        elif indent is not None and depth > indent:
            kept.append(line.strip())
        elif indent is not None:
            break
    if not kept:
        return message
    text = f"{lines[0]} {' '.join(kept)}"
    text = re.sub(r"Does not validate against any of the Union subtypes Subtypes: \[.*?\] Errors: ", "", text)
    return re.sub(r" - Expected a <class 'NoneType'>| Given value type: .*$", "", text)


def main(args: list[str] | None = None) -> None:
    # One RL iteration is an IterableDataset pass of known length, on purpose.
    warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # The frozen reference model is in eval mode on purpose.
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
    # A colocated vLLM engine initializes torch.distributed in this one process, which makes Lightning
    # take single-device runs for distributed ones; what RL logs per iteration is synced already.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    try:
        if args is None:  # from the shell: Lightning reads sys.argv itself
            sys.argv[1:] = canonical_algorithm_flag(sys.argv[1:])
        LitVineCLI(None if args is None else canonical_algorithm_flag(args))
    except ArgumentError as err:  # malformed YAML, unknown keys, wrong types
        argv = sys.argv[1:] if args is None else args
        command = next((a for a in argv if a in ("fit", "validate", "test", "predict")), "")
        print(f"lit-vine: error: {concise_parse_error(str(err))}\n(lit-vine {command} --help lists the accepted options)".replace("  --help", " --help"), file=sys.stderr)
        sys.exit(2)
    except SIGTERMException:  # SIGTERM / Ctrl+C: a checkpoint was written (lit_vine.faults.CheckpointOnInterrupt)
        sys.exit(128 + signal.SIGTERM)
    except Exception as err:
        config_error = root_config_error(err)
        if config_error is None:
            raise
        print(f"lit-vine: error: {config_error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
