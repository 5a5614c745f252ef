"""The helpers behind the book *MNIST, end to end*.

One module per idea, each traceable to the chapter that teaches it:

- `helpers.runtime` - the setup cell every chapter opens with (seed, device, quick mode)
- `helpers.idx`    - the IDX file format, by hand (chapter 01)
- `helpers.data`   - MNIST on disk, verified; datasets and loaders (chapter 01)
- `helpers.plots`  - the pictures of the data (chapter 02), of training and evaluation (07, 08)
- `helpers.models` - the seed's network (chapter 03)
- `helpers.graph`  - the recorded graph, FLOPs and saved activations (chapter 04)
- `helpers.backprop` - a backward pass written by hand (chapter 05)
- `helpers.optimizers` - SGD, momentum and Adam as update rules by hand (chapter 06)
- `helpers.surfaces` - 2-D loss surfaces and optimizer trajectories (chapter 06)
- `helpers.training` - the seed's training loop, recipes, checkpoints (chapter 07)
- `helpers.evaluation` - predictions, confusion matrix, per-class metrics, mistakes (chapter 08)
- `helpers.experiments` - the seed's suggestions as cached, seeded experiments (chapter 09)
- `helpers.fast` - training on tensors held in memory, time to accuracy (chapter 10)
- `helpers.bench` - `python -m helpers.bench`: the seed's pipeline vs the fast path (chapter 10)
"""

from helpers.runtime import is_quick, pick_device, seed_everything, setup

__all__ = ["is_quick", "pick_device", "seed_everything", "setup"]
__version__ = "0.2.0"
