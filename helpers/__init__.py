"""The helpers behind the book *MNIST, end to end*.

One module per idea, each traceable to the chapter that teaches it:

- `helpers.runtime` - the setup cell every chapter opens with (seed, threads, device, quick mode),
  and `expect_error`, which shows an error without stopping the run (chapter 03)
- `helpers.idx` - the IDX file format, by hand (chapter 01)
- `helpers.data` - MNIST on disk, verified; datasets, loaders, tensors, the validation split (01)
- `helpers.plots` - pictures of the data (02), of the seed's network (03), of training and
  evaluation (07, 08), of a CNN (09)
- `helpers.models` - the seed's network (chapter 03), the later ones, and `MODELS`, their registry
- `helpers.graph` - the recorded graph, FLOPs and saved activations (chapter 04)
- `helpers.backprop` - a backward pass written by hand (chapter 05)
- `helpers.optimizers` - SGD, momentum and Adam as update rules by hand (chapter 06)
- `helpers.surfaces` - 2-D loss surfaces and optimizer trajectories (chapter 06)
- `helpers.recipe` - `Recipe`, the one settings type of every training run; what it builds (07)
- `helpers.artifacts` - where trained models and results live, when they are stale, how they
  load: one store, shipped and cached, and `best_model` (chapter 07)
- `helpers.training` - the seed's training loop, checkpoints, exact resume (chapter 07)
- `helpers.evaluation` - predictions, confusion matrix, per-class metrics, mistakes (chapter 08)
- `helpers.conv` - a convolution by hand, its output size, cost and receptive field (chapter 09)
- `helpers.augment` - augmentation on whole batches in memory (chapter 10)
- `helpers.loop` - `fit`, the in-memory training loop of chapters 10 and 11 and the benchmark
- `helpers.provenance` - is a stored result current? Loop versions, checked by fingerprints (10)
- `helpers.experiments` - the seed's suggestions as cached, seeded experiments (chapter 10)
- `helpers.fast` - the fast path's pieces: tensors as a loader, cheap Dropout, profiling (11)
- `helpers.book_run` - the book's run of a long measurement, loaded unless a chapter runs live (11)
- `helpers.timing` - variants timed side by side, in turn, so a busy machine biases none (11)
- `helpers.bench` - `python -m helpers.bench`: the seed's pipeline vs the fast path (chapter 11)
- `helpers.distributed` - the in-memory loop on several processes: torchrun, DDP, BatchNorm (11)
- `helpers.inference` - BatchNorm folded, weights exported, a drawing made MNIST-like (12)
- `helpers.shifts` - the shift suite: MNIST as other pens, scanners and pages give it (13)
- `helpers.robust` - augmentation that models how people and pens vary; the robust recipes (13)
- `helpers.calibration` - calibration, temperature scaling and the "not sure" rule (13)

Where new code goes. A new model: a class in `models` and an entry in `models.MODELS`, then any
`Recipe` can name it. A new training option (an optimizer, a schedule, a regularizer): a `Recipe`
field and its case in `recipe.build_*` or in `loop.fit`, never a new loop. A new chapter's own
idea: a new module named for it, importing only what it or an earlier chapter teaches. Paths,
quick mode and thread counts are passed in by the caller (the setup cell decides them once), not
read from the environment deep inside. A trained result that a chapter ships goes in `shipped/`
through `scripts/book_tools.py`, which records it in `shipped/manifest.json`.
"""

from helpers.runtime import expect_error, is_quick, pick_device, seed_everything, setup

# The chapter that teaches each module (0: book machinery, the setup cell and the stored-run
# switch `LIVE`, which each chapter that uses it explains in place). A chapter imports only modules
# taught in it or before it; tests/test_book.py checks.
TAUGHT_IN = {
    "runtime": 0,
    "book_run": 0,
    "idx": 1,
    "data": 1,
    "plots": 2,
    "models": 3,
    "graph": 4,
    "backprop": 5,
    "optimizers": 6,
    "surfaces": 6,
    "recipe": 7,
    "artifacts": 7,
    "training": 7,
    "evaluation": 8,
    "conv": 9,
    "augment": 10,
    "loop": 10,
    "provenance": 10,
    "experiments": 10,
    "fast": 11,
    "timing": 11,
    "bench": 11,
    "distributed": 11,
    "inference": 12,
    "shifts": 13,
    "robust": 13,
    "calibration": 13,
}

__all__ = ["TAUGHT_IN", "expect_error", "is_quick", "pick_device", "seed_everything", "setup"]
__version__ = "0.6.0"
