"""Full fine-tuning baseline: no prompt, every weight of the backbone trainable.

SuperPos paper section 3.4: lr 1e-5 ("to preserve the original weights"), dropout on. The
paper states no weight decay; the default is 0 (Hugging Face Trainer's default). Full
fine-tuning never fuses with other trials: it changes the shared backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from superpos.methods.base import MethodConfig, PromptMethod


@dataclass
class FullConfig(MethodConfig):
    lr: float = 1e-5
    weight_decay: float = 0.0
    prompt_len: int = 0
    min_prompt_len: ClassVar[int] = 0


class FullFineTuning(PromptMethod):
    name = "full"
    input_dependent = True  # no prompt to export: the trained state is the model itself
    trains_backbone = True

    def __init__(self, config: FullConfig, backbone: nn.Module):
        super().__init__(config)
        self.backbone = backbone
        for p in backbone.model.parameters():
            p.requires_grad_(True)

    def forward(self, inputs_embeds, attention_mask):
        return None

    def export(self):
        return {k: v.detach().clone().contiguous() for k, v in self.backbone.model.state_dict().items()}
