"""How a run trains, beneath the train step: mmcv hooks (hooks: non-finite loss, epoch seeds, the
logger group's), the processes and devices a run uses (world), the DDP wrapper that works on the CPU
and with PyTorch 2 (ddp), hashed checkpoints and resuming (checkpoints), and the fast path on the
device (fast/). Imports mmclf.reports, mmclf.models, mmclf.data, mmclf.run and mmclf.errors only."""
