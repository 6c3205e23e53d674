"""Which callables a saved config may name: `python -m runner.evaluate run_dir=RUN trust=[my_project.models]`.

A checkpoint carries the config that trained it, and the evaluator rebuilds the model from
it. A file from elsewhere is data, not code: one that loads cleanly with weights_only=True
could still name any importable callable as its `model._target_` (`torch.load` of a pickle,
say), and Hydra's instantiate would call it; the same holds for a `dataset._target_`
(dataset=custom). So before anything is built, every `_target_` in the saved model and dataset
must be one of runner's own model builders, a torchvision model builder, or in a module the
user trusts by name on the command line; interpolations, which could make
a target while resolving, are refused outright.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from runner.common.errors import UserError

RUNNER_BUILDERS = ("linear", "mlp", "lenet", "convnet", "resnet", "timm_model", "torchvision_model")  # runner.models' builders


def module_of(target: str) -> str:
    return target.rsplit(".", 1)[0]


def is_trusted(target: str, trusted_modules: Iterable[str]) -> bool:
    if not isinstance(target, str):
        return False
    module, name = module_of(target), target.rsplit(".", 1)[-1]
    if module == "runner.models":
        return name in RUNNER_BUILDERS
    if module == "torchvision.models":
        import torchvision.models

        return name in torchvision.models.list_models()
    return any(module == m or module.startswith(m + ".") for m in trusted_modules)


def targets_and_interpolations(node, key: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, value) of every `_target_` and every string with an interpolation, at any depth."""
    if isinstance(node, dict):
        for child_key, value in node.items():
            dotted = f"{key}.{child_key}" if key else str(child_key)
            if child_key == "_target_":
                yield dotted, value
            yield from targets_and_interpolations(value, dotted)
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from targets_and_interpolations(value, f"{key}[{index}]")
    elif isinstance(node, str) and "${" in node:
        yield key, node


BUILT_FROM_A_SAVED_CONFIG = ("model", "dataset")  # the blocks the evaluator instantiates


def require_trusted(config: dict, trusted_modules: Iterable[str], source: str) -> None:
    """Raise a UserError before any call if a saved config's model or dataset names an untrusted callable."""
    trusted_modules = list(trusted_modules)
    blocks = {block: config[block] for block in BUILT_FROM_A_SAVED_CONFIG if block in config}
    untrusted = []
    for key, value in targets_and_interpolations(blocks):
        if not key.endswith("_target_"):
            raise UserError(f"{source} has an interpolation in its saved config ({key}={value!r}), which a saved, "
                            "resolved config never has: refused, nothing was built. Fix: evaluate only checkpoints "
                            "written by runner")
        if not is_trusted(value, trusted_modules):
            untrusted.append((key, value))
    if untrusted:
        named = " and ".join(f"{key}={value!r}" for key, value in untrusted)
        modules = ",".join(dict.fromkeys(module_of(str(value)) for _, value in untrusted))
        raise UserError(
            f"{source} names {named}, which {'is' if len(untrusted) == 1 else 'are'} not trusted: the evaluator "
            "builds only runner's models and datasets, torchvision's models and the modules the user trusts; "
            f"nothing was built. Fix: if you trust this checkpoint and its code, trust=[{modules}] "
            f"(python -m runner.evaluate) or evaluate.trust=[{modules}] (python -m runner)"
        )


def keyword_arguments(function) -> list[str] | None:
    """The arguments a callable's config may give it; None when it takes any (**kwargs) or has no signature."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return [name for name, p in parameters.items() if p.kind != inspect.Parameter.VAR_POSITIONAL]
