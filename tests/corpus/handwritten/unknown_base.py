# Hand-written for kvaudit: the base class is not in the installed kvpress, so kvaudit cannot read
# what the class inherits and does not audit it as a press.
# expect: ForkOnlySubclass press=no
"""ChunkKV (arXiv 2502.00299) on top of a fork's own press."""

from dataclasses import dataclass

from kvpress.presses.fork_only_press import ForkOnlyPress


@dataclass
class ForkOnlySubclass(ForkOnlyPress):
    n_reuse: int = 2
