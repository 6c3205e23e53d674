"""python -m runner.fetch_weights model=timm model.name=convnext_tiny.fb_in1k model.pretrained=true

The command is runner/cli/fetch_weights.py; installed, it is the `runner-fetch-weights` command.
"""

from runner.cli.fetch_weights import cli

if __name__ == "__main__":
    cli()
