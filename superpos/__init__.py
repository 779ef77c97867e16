"""superpos: soft-prompt tuning methods, backbones, tasks and the training loop.

The core (everything in this package except ``superpos.cli``'s sweep/search/report
subcommands) imports only torch, transformers, numpy, safetensors and data libraries,
so it runs on a bare GPU box.
"""

__version__ = "0.1.0"
