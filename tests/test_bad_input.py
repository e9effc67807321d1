"""Bad input stops before any work: non-zero exit, a message naming the key, no traceback,
and nothing created or damaged on disk."""
import json
import os

import pytest
import torch

from mmclf import validate as validate_module
from mmclf.errors import ConfigError
from mmclf.reports.jobs import scalar_metric_names
from mmclf.validate import validate
from tests.conftest import compose_cfg, run_cli

HYDRA_ERRORS = [  # Hydra's own composition errors: its message, no traceback
    ("not_a_key=1", "not_a_key"),
    ("schedule.optimizer.lrr=0.1", "lrr"),
    ("model=resnet99", "Available options in 'model'"),
    ("seed=abc", "full_key: seed"),
    ("device=gpu", "expected one of [auto, cpu, cuda]"),
]
MMCLF_ERRORS = [  # mmclf's value checks: exactly one line
    ("schedule.runner.max_epochs=0", "schedule.runner.max_epochs=0: must be a positive integer"),
    ("schedule.runner.max_epochs=-3", "schedule.runner.max_epochs=-3: must be a positive integer"),
    ("data.samples_per_gpu=0", "data.samples_per_gpu=0: must be a positive integer"),
    ("schedule.optimizer.lr=0", "schedule.optimizer.lr=0: must be a positive number"),
]


def assert_refused(result, expected, run_dir):
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists(), "a refused run must not create its run dir"


@pytest.mark.parametrize("override, expected", HYDRA_ERRORS)
def test_hydra_refuses_unknown_keys_options_and_types(tmp_path, override, expected):
    run_dir = tmp_path / "run"
    assert_refused(run_cli(override, f"hydra.run.dir={run_dir}"), expected, run_dir)


@pytest.mark.parametrize("override, expected", MMCLF_ERRORS)
def test_out_of_range_values_give_one_line(tmp_path, override, expected):
    run_dir = tmp_path / "run"
    result = run_cli(override, f"hydra.run.dir={run_dir}")
    assert_refused(result, expected, run_dir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mmclf: error: {expected}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("device=cuda", f"hydra.run.dir={run_dir}")
    assert_refused(result, "device=cuda: no CUDA GPU is visible here; use device=auto or device=cpu", run_dir)


def test_data_root_that_is_a_file_is_refused_and_kept(tmp_path):
    data_file = tmp_path / "data.txt"
    data_file.write_text("precious")
    run_dir = tmp_path / "run"
    assert_refused(run_cli(f"data.root={data_file}", f"hydra.run.dir={run_dir}"), "data.root", run_dir)
    assert data_file.read_text() == "precious"


def test_run_dir_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("precious")
    result = run_cli(f"hydra.run.dir={blocker}/run")
    assert result.returncode == 2 and "hydra.run.dir" in result.stderr and "Traceback" not in result.stderr
    assert blocker.read_text() == "precious"


@pytest.mark.skipif(os.access("/proc/sys", os.W_OK), reason="/proc/sys is writable here (a privileged container)")
def test_unwritable_run_dir_is_refused():
    # /proc/sys is read-only even for root, unlike a chmod-ed folder
    result = run_cli("hydra.run.dir=/proc/sys/mmclf-run")
    assert result.returncode == 2
    assert "hydra.run.dir: cannot write under /proc/sys" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(os.access("/proc/sys", os.W_OK), reason="/proc/sys is writable here (a privileged container)")
def test_unwritable_sweep_dir_is_refused():
    result = run_cli("-m", "hydra.sweep.dir=/proc/sys/mmclf-sweep", "schedule.optimizer.lr=0.1,0.05")
    assert result.returncode == 2 and "hydra.sweep.dir: cannot write under /proc/sys" in result.stderr


BAD_VALUES = [  # mmclf's value checks, in process: each names its key and a fix
    ("data.num_classes=0", "data.num_classes=0: must be a positive integer"),
    ("data.num_classes=-2", "data.num_classes=-2: must be a positive integer"),
    ("data.image_size=0", "data.image_size=0: must be a positive integer"),
    ("data.num_train=0", "data.num_train=0: must be a positive integer"),
    ("seed=-1", "seed=-1: must be an integer from 0 to 4294967295"),
    ("seed=99999999999", "seed=99999999999: must be an integer from 0 to 4294967295"),
    ("data.workers_per_gpu=-1", "data.workers_per_gpu=-1: must be an integer from 0 up"),
    ("runtime.checkpoint_config.interval=0", "runtime.checkpoint_config.interval=0: must be a positive integer"),
    ("runtime.log_config.interval=0", "runtime.log_config.interval=0: must be a positive integer"),
    ("data.evaluation.interval=-1", "data.evaluation.interval=-1: must be an integer from 0 up"),
    ("data.evaluation.interval=abc", "data.evaluation.interval='abc': must be an integer from 0 up"),
    ("optimized_metric=bogus",
     "optimized_metric='bogus': not a validation metric of metrics.json; use one of val_accuracy_top-1"),
    ("optimized_metric=test_accuracy_top-1", "the test split is only reported, never used to choose; optimise its "
     "validation figure, optimized_metric=val_accuracy_top-1"),
    ("optimized_metric=", "optimized_metric='': not a validation metric of metrics.json"),
    ("resume=", "resume is empty"),
    ("data=folder", "data.root: required by the options chosen and not given; add e.g. data.root=/datasets/pets"),
    ("model=zoo", "model.config: required by the options chosen and not given; add e.g. "
     "model.config=resnet/resnet50_8xb32_in1k"),
    ("data.val_fraction=1", "data.val_fraction=1: must be a number in [0, 1)"),
    ("data.num_classes=null", "data.num_classes is null: only data=folder finds its classes in the data"),
    ("resume=/nowhere/epoch_3.pth", "resume=/nowhere/epoch_3.pth: not a loadable mmcv checkpoint"),
    ("data.root=", "data.root is empty"),
    ("data.root=/tmp/" + "x" * 300, "bytes long; this filesystem allows 255: choose a shorter data.root"),
    ("runtime.load_from=/nowhere/epoch_3.pth", "runtime.load_from=/nowhere/epoch_3.pth: no such checkpoint file here"),
]


@pytest.mark.parametrize("override, expected", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_values_are_refused_before_any_work(override, expected):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["data=synthetic", override]))
    assert expected in str(err.value)


def test_metric_names_are_the_scalars_of_metrics_json(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert scalar_metric_names(10, onnx=True) == [key for key, value in metrics.items()
                                                  if isinstance(value, (int, float))]


def test_an_empty_data_root_writes_nothing_anywhere(tmp_path):
    result = run_cli("data=synthetic", "data.root=", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and "mmclf: error: data.root is empty" in result.stderr
    assert list(tmp_path.iterdir()) == [], "no run dir, no .prepare.lock, no dataset"


def test_an_os_error_in_the_validation_callback_is_one_line_not_swallowed(monkeypatch, capsys):
    def unreadable(cfg):
        raise PermissionError(13, "Permission denied", "/srv/datasets")

    monkeypatch.setattr(validate_module, "validate", unreadable)
    with pytest.raises(SystemExit) as exit_info:
        validate_module.ValidateBeforeRun().on_multirun_start(compose_cfg())
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "mmclf: error: /srv/datasets: Permission denied; check that path\n"


class RunsCode:
    """Unpickled, this would run a command: a checkpoint must never be opened this way."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/mmclf-load-from-ran-code",))


@pytest.mark.parametrize("content, reason", [(b"not a checkpoint", "not a loadable checkpoint of tensors"),
                                             (RunsCode(), "not a loadable checkpoint of tensors (Weights only load")])
def test_runtime_load_from_must_be_a_checkpoint_of_tensors(tmp_path, content, reason):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save({"state_dict": content}, path)
    run_dir = tmp_path / "run"
    result = run_cli(f"runtime.load_from={path}", f"hydra.run.dir={run_dir}")
    assert_refused(result, f"mmclf: error: runtime.load_from={path}: {reason}", run_dir)
    assert len(result.stderr.strip().splitlines()) == 1 and not os.path.exists("/tmp/mmclf-load-from-ran-code")


def test_a_data_root_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    root = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")  # Latin-1 bytes, as an old archive names it
    run_dir = tmp_path / "run"
    result = run_cli(f'data.root="{root}"', f"hydra.run.dir={run_dir}")
    assert_refused(result, "the path is not valid UTF-8, which run records (JSON, YAML) cannot hold", run_dir)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
