"""Every config group option composes, bridges to an mmcv config, and unknown keys are refused."""
import pytest
from hydra.errors import ConfigCompositionException

from mmclf.models.config import MMCLS_DATA_KEYS, class_count, to_mmcv_config
from mmclf.run.rundir import RunDir
from mmclf.steps.prepare_data import prepare_data
from tests.conftest import CONF_DIR, compose_cfg, write_image_folder


def group_options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def required_keys(override, tmp_path) -> list[str]:
    """What an option needs besides its name: a zoo model its config, your own images their folder."""
    if override == "model=zoo":
        return ["model.config=resnet/resnet18_8xb32_in1k"]
    if override == "data=folder":
        return [f"data.root={write_image_folder(tmp_path / 'images')}"]
    return []


@pytest.mark.parametrize("group", ["backend", "model", "data", "schedule", "runtime", "experiment"])
def test_every_group_option_composes(group, tmp_path):
    options = group_options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose_cfg([f"{group}={option}", *required_keys(f"{group}={option}", tmp_path)])
        if cfg.data.name == "folder":
            prepare_data(cfg, RunDir(tmp_path))  # finds the classes (data.json)
        mm = to_mmcv_config(cfg, tmp_path)
        assert mm.model.head.num_classes == class_count(cfg, tmp_path) == (cfg.data.num_classes or 3)
        assert set(mm.data) <= {*MMCLS_DATA_KEYS, "multiprocessing_context"}  # mmcls hands the last to DataLoader
        assert mm.work_dir == str(tmp_path / "work_dir")


def test_reference_recipe_matches_mmcls_resnet18_8xb16_cifar10(tmp_path):
    mm = to_mmcv_config(compose_cfg(), tmp_path)
    assert mm.model.backbone == {"type": "ResNet_CIFAR", "depth": 18, "num_stages": 4,
                                 "out_indices": [3], "style": "pytorch"}
    assert mm.optimizer == {"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0001}
    assert mm.lr_config == {"policy": "step", "step": [100, 150]}
    assert mm.runner == {"type": "EpochBasedRunner", "max_epochs": 200}
    assert mm.data.samples_per_gpu == 128
    assert mm.data.train.type == "CIFAR10Split" and mm.data.train.split == "train"  # mmcls's CIFAR10, held out
    assert mm.data.val.split == "val" and mm.data.val.val_fraction == 0.1  # 5,000 of 50,000: not the test split
    assert mm.train_pipeline[0] == {"type": "RandomCrop", "size": 32, "padding": 4}
    assert mm.train_pipeline[1]["type"] == "RandomFlip"
    assert mm.img_norm_cfg.mean == [125.307, 122.961, 113.8575]


def test_quickstart_experiment_uses_digits_and_quick_schedule():
    cfg = compose_cfg(["experiment=quickstart"])
    assert cfg.data.name == "digits"
    assert cfg.schedule.lr_config.policy == "CosineAnnealing"


def test_mmcls_keys_are_the_override_paths():
    cfg = compose_cfg(["schedule.optimizer.lr=0.05", "schedule.runner.max_epochs=3", "data.samples_per_gpu=7"])
    assert (cfg.schedule.optimizer.lr, cfg.schedule.runner.max_epochs, cfg.data.samples_per_gpu) == (0.05, 3, 7)


@pytest.mark.parametrize("override", ["schedule.optimizer.lrr=0.1", "not_a_key=1", "data.sample_per_gpu=3"])
def test_unknown_keys_are_refused(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg([override])


@pytest.mark.parametrize("override", ["device=gpu", "seed=abc", "deterministic=maybe"])
def test_typed_run_options_are_checked(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg([override])


def test_mmcv_config_dump_reloads(tmp_path):
    import mmcv

    mm = to_mmcv_config(compose_cfg(), tmp_path)
    mm.dump(str(tmp_path / "dumped.py"))
    reloaded = mmcv.Config.fromfile(str(tmp_path / "dumped.py"))
    assert reloaded.model == mm.model and reloaded.data.train == mm.data.train


@pytest.mark.parametrize("data", ["digits", "cifar10"])
def test_no_worker_processes_means_none_kept_whatever_the_recipe_says(tmp_path, data):
    cfg = compose_cfg([f"data={data}", "data.root=datasets", "data.workers_per_gpu=0"])
    assert cfg.data.persistent_workers, f"data={data} keeps its workers: the case this test is about"
    mm = to_mmcv_config(cfg, tmp_path)
    assert mm.data.persistent_workers is False and "multiprocessing_context" not in mm.data


def test_where_the_cache_lives_is_not_part_of_the_recipe_but_the_validation_split_is():
    from mmclf.models.config import weights_fingerprint

    base = weights_fingerprint(compose_cfg(["data=digits"]))
    assert weights_fingerprint(compose_cfg(["data=digits", "data.cache_dir=/elsewhere"])) == base
    assert weights_fingerprint(compose_cfg(["data=digits", "data.val_fraction=0.2"])) != base


@pytest.mark.parametrize("data", ["synthetic", "cifar10"])
def test_the_mmcls_config_names_data_from_the_root_so_tools_run_from_anywhere(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    mm = to_mmcv_config(compose_cfg([f"data={data}", "data.root=datasets"]), tmp_path / "run")
    for split in ("train", "val", "test"):
        assert mm.data[split].data_prefix.startswith(str(tmp_path / "datasets")), mm.data[split].data_prefix


def test_the_groups_the_entry_point_trusts_never_set_a_run_mode(tmp_path):
    # python -m mmclf composes the config once where no override can set hydra.mode (mmclf/__main__.py).
    from mmclf.__main__ import GROUPS_WITHOUT_MODE, may_set_mode

    for group in GROUPS_WITHOUT_MODE:
        for option in group_options(group):
            cfg = compose_cfg([f"{group}={option}", *required_keys(f"{group}={option}", tmp_path)],
                              return_hydra_config=True)
            assert cfg.hydra.mode is None, f"{group}={option} sets hydra.mode"
    assert compose_cfg(["hparams_search=optuna"], return_hydra_config=True).hydra.mode.name == "MULTIRUN"
    assert [may_set_mode(o) for o in ("backend=kfp", "schedule.optimizer.lr=0.1", "hydra.run.dir=x",
                                      "hparams_search=optuna", "+experiment=mine", "hydra.mode=MULTIRUN",
                                      "hydra/launcher=joblib")] == [False, False, False, True, True, True, True]
