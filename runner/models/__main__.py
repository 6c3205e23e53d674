"""List the models by name: `python -m runner.models [timm|torchvision] [PATTERN]`, e.g. `python -m runner.models timm 'convnext*'`.

timm prints its architectures and its pretrained names with their tags (`convnext_tiny.fb_in1k`);
torchvision its classification models (their weights: model.weights=, one of the enum's members).
"""

from __future__ import annotations

import sys

from runner.common.errors import UserError
from runner.models.names import FAMILIES, names


def main(argv: list[str]) -> int:
    families = [argv[0]] if argv else list(FAMILIES)
    pattern = argv[1] if len(argv) > 1 else "*"
    try:
        for family in families:
            print("\n".join(f"{family} {name}" if not argv else name for name in names(family, pattern)))
    except UserError as error:
        print(error, file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head` stopped reading: not an error of the listing
        sys.stdout = None  # nothing more to flush at exit
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
