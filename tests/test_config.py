from pathlib import Path

import pytest

from lightly_amix.config import PretrainConfig, load_config, to_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    dataset, method = path.stem.rsplit("_", 1)
    assert cfg.method == method
    assert cfg.data.dataset == dataset.replace("_", "-")


def test_paper_defaults_for_stl10() -> None:
    cfg = load_config(CONFIGS / "stl10_mocov2.yaml")
    assert (cfg.data.split, cfg.data.image_size) == ("train+unlabeled", 96)
    assert (cfg.model.backbone, cfg.model.cifar_stem) == ("resnet18", False)
    assert (cfg.model.queue_size, cfg.model.temperature, cfg.model.momentum) == (65536, 0.2, 0.999)
    assert (cfg.optim.base_lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.03, 0.9, 1e-4)
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (400, 256)
    tiny = load_config(CONFIGS / "tiny_imagenet_mocov2.yaml")
    assert (tiny.data.image_size, tiny.model.cifar_stem) == (64, True)


def test_precedence_yaml_then_flags_then_set(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  epochs: 7\n  batch_size: 32\nmodel:\n  queue_size: 100\n")
    cfg = load_config(
        path,
        overrides=["trainer.batch_size=16"],
        flags={"trainer.batch_size": 64, "model.queue_size": 50, "trainer.seed": None},
    )
    assert cfg.trainer.epochs == 7  # from YAML
    assert cfg.model.queue_size == 50  # flag beats YAML
    assert cfg.trainer.batch_size == 16  # --set beats the flag
    assert cfg.trainer.seed == PretrainConfig().trainer.seed  # None flags are ignored


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(overrides=["model.backbone=resnet50", "trainer.limit_batches=3"])
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.colour=1"],
            "Unknown config key 'data.colour'.*Valid keys in data: augment_on, crop_min_scale, "
            "dataset, download",
        ),
        (["epochs=1"], "Unknown config key 'epochs'.*Valid keys in <top level>: data, method"),
        (["trainer.epochs=many"], "Invalid value for config key 'trainer.epochs'"),
        (["model.backbone=vgg16"], "Invalid model.backbone 'vgg16'. Expected one of: resnet18"),
        (["method=simclr"], "Invalid method 'simclr'"),
        (["data.augment_on=gpu"], "Invalid data.augment_on 'gpu'. Expected one of: auto, loader"),
        (["data.crop_min_scale=0"], r"Invalid data.crop_min_scale 0.0: expected .* \(0, 1\]"),
        (["model.momentum=1.5"], "model.momentum"),
        (["trainer.batch_size=0"], "trainer.batch_size 0"),
        (["mixing.block_lr_scale=0"], "mixing.block_lr_scale"),
        (["model.bn_splits=-1"], "model.bn_splits -1"),
        (
            ["trainer.batch_size=10", "model.bn_splits=4"],
            "trainer.batch_size 10 is not a multiple of model.bn_splits 4",
        ),
        (
            ["trainer.batch_size=8", "model.bn_splits=4", "trainer.sync_batchnorm=true"],
            "bn_splits and trainer.sync_batchnorm exclude each other",
        ),
        (["mix_block.small_init=some"], "Invalid small_init 'some'"),
        (["trainer.epochs=2", "optim.warmup_epochs=2"], "warmup_epochs"),
        (["trainer.epochs"], "Bad override 'trainer.epochs': expected key=value"),
    ],
)
def test_bad_values_are_clear_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(overrides=overrides)


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 0.1\n")
    with pytest.raises(
        ValueError, match=r"'optim.lr' in config file .*Valid keys in optim: base_lr"
    ):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(path)
