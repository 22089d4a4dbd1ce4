import sys
from pathlib import Path

import pytest
import yaml

from lightly_amix.classifier_config import ClassifierConfig, validate_classifier
from lightly_amix.config import METHODS as CONFIG_METHODS
from lightly_amix.config import PretrainConfig, load_config, recipe_config_files, to_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


DATASETS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONFIGS / "methods").glob("*.yaml"))


def _recipe(dataset: str, method: str) -> PretrainConfig:
    files, defaults = recipe_config_files(CONFIGS, dataset.replace("_", "-"), method)
    return load_config(files, defaults=defaults)


def test_one_base_per_data_set_and_one_overlay_per_method() -> None:
    assert DATASETS == ["fashion_mnist", "imagenet", "stl10", "tiny_imagenet"]
    assert METHODS == sorted(CONFIG_METHODS)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("method", METHODS)
def test_every_data_set_and_method_combine(dataset: str, method: str) -> None:
    cfg = _recipe(dataset, method)
    assert cfg.method == method
    assert cfg.data.dataset == dataset.replace("_", "-")
    assert cfg.trainer.output_dir == f"out/{dataset}_{method.replace('-', '_')}"
    # The data set's base sets no method; the method's overlay sets no data or model.
    base = yaml.safe_load((CONFIGS / f"{dataset}.yaml").read_text())
    overlay = yaml.safe_load((CONFIGS / "methods" / f"{method}.yaml").read_text())
    assert "method" not in base and not {"data", "model", "optim", "trainer"} & set(overlay)


def test_paper_defaults_for_stl10() -> None:
    cfg = _recipe("stl10", "mocov2")
    assert (cfg.data.split, cfg.data.image_size) == ("train+unlabeled", 96)
    assert (cfg.model.backbone, cfg.model.cifar_stem) == ("resnet18", False)
    assert (cfg.model.queue_size, cfg.model.temperature, cfg.model.momentum) == (65536, 0.2, 0.999)
    assert (cfg.optim.base_lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.03, 0.9, 1e-4)
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (400, 256)
    # MoCo v2's projection head as the paper's reference code runs it: 512 -> 2048 -> 128.
    assert (cfg.model.proj_hidden_dim, cfg.model.proj_output_dim) == (2048, 128)
    tiny = _recipe("tiny_imagenet", "amix-c")
    assert (tiny.data.image_size, tiny.model.cifar_stem, tiny.model.proj_hidden_dim) == (
        64,
        True,
        2048,
    )
    assert (tiny.mixing.block_loss, tiny.odc.num_clusters, tiny.mixing.mix_weight) == (
        "ce_pl+bce",
        200,
        1.0,
    )


def test_fashion_mnist_keeps_its_measured_settings() -> None:
    """The settings of the runs in benchmarks/RESULTS.md: head 512 wide, mixup weight 0.5."""
    for method in ("amix-i", "cutmix"):
        cfg = _recipe("fashion_mnist", method)
        assert cfg.model.proj_hidden_dim is None and cfg.mixing.mix_weight == 0.5


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
        (
            ["epochs=1"],
            "Unknown config key 'epochs'.*Valid keys in <top level>: data, imix, method",
        ),
        (["trainer.epochs=many"], "Invalid value for config key 'trainer.epochs'"),
        (["model.backbone=vgg16"], "Invalid model.backbone 'vgg16'. Expected one of: resnet18"),
        (["method=dino"], "Invalid method 'dino'"),
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


def test_puzzlemix_without_its_graph_cut_extra_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The missing optional dependency stops a run when its config is checked (exit 2 in the
    recipes), before any data is read."""
    monkeypatch.setitem(sys.modules, "gco", None)  # importlib then finds no gco
    with pytest.raises(ValueError, match=r"gco-wrapper: pip install 'lightly-amix\[puzzlemix\]'"):
        _recipe("stl10", "puzzlemix")
    with pytest.raises(ValueError, match="gco-wrapper"):
        validate_classifier(ClassifierConfig(method="puzzlemix"))
    monkeypatch.delitem(sys.modules, "gco")
    assert _recipe("stl10", "puzzlemix").method == "puzzlemix"  # with the extra installed
