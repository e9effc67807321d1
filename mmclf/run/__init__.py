"""The run dir and the files in it: where each file lives (rundir), atomic writes and damaged-record
reads (io), one job per run dir (lock), where logs go (logs), and a GPU per parallel sweep job
(sweep_gpus). The floor everything stands on: it imports nothing of mmclf but mmclf.errors."""
