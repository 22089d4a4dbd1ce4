"""transfer/convert_to_detectron2.py: torchvision ResNet-50 -> detectron2 .pkl (no detectron2)."""

from __future__ import annotations

import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor

from transfer.convert_to_detectron2 import (
    ConversionError,
    convert,
    identify_resnet,
    load_backbone_state,
    main,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "transfer" / "convert_to_detectron2.py"
# torchvision's ResNet-50 state_dict has 320 entries: 53 num_batches_tracked, fc.weight and
# fc.bias, and 265 backbone tensors (161 parameters and 104 BN running statistics).
N_RESNET50_TENSORS = 265

# A representative list: stem, every kind of block entry, first and last block of several stages.
EXPECTED_NAMES = {
    "conv1.weight": "stem.conv1.weight",
    "bn1.weight": "stem.conv1.norm.weight",
    "bn1.bias": "stem.conv1.norm.bias",
    "bn1.running_mean": "stem.conv1.norm.running_mean",
    "bn1.running_var": "stem.conv1.norm.running_var",
    "layer1.0.conv1.weight": "res2.0.conv1.weight",
    "layer1.0.bn1.weight": "res2.0.conv1.norm.weight",
    "layer1.0.bn3.running_var": "res2.0.conv3.norm.running_var",
    "layer1.0.downsample.0.weight": "res2.0.shortcut.weight",
    "layer1.0.downsample.1.weight": "res2.0.shortcut.norm.weight",
    "layer1.0.downsample.1.bias": "res2.0.shortcut.norm.bias",
    "layer1.0.downsample.1.running_mean": "res2.0.shortcut.norm.running_mean",
    "layer1.2.conv3.weight": "res2.2.conv3.weight",
    "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
    "layer2.3.bn2.running_mean": "res3.3.conv2.norm.running_mean",
    "layer3.0.conv2.weight": "res4.0.conv2.weight",
    "layer3.5.bn1.bias": "res4.5.conv1.norm.bias",
    "layer4.0.downsample.1.running_var": "res5.0.shortcut.norm.running_var",
    "layer4.2.conv3.weight": "res5.2.conv3.weight",
    "layer4.2.bn3.bias": "res5.2.conv3.norm.bias",
}


def resnet50_backbone_state(seed: int = 0) -> dict[str, Tensor]:
    """A randomly initialised torchvision ResNet-50 without fc, with non-trivial BN buffers."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet50().state_dict()
    for key, value in state.items():  # running stats start at 0/1: make them distinguishable
        if key.endswith(("running_mean", "running_var")):
            value.uniform_(0.5, 1.5)
        elif key.endswith("num_batches_tracked"):
            value.fill_(7)
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def resnet18_backbone_state() -> dict[str, Tensor]:
    state = torchvision.models.resnet18().state_dict()
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def expected_name(key: str) -> str:
    """MoCo's detectron2 renaming, written independently of the converter's regular expressions."""
    parts = key.split(".")
    if parts[0] == "conv1":
        return "stem." + key
    if parts[0] == "bn1":
        return "stem.conv1.norm." + parts[1]
    stage = "res" + str(int(parts[0].removeprefix("layer")) + 1)
    block, layer, rest = parts[1], parts[2], parts[3:]
    if layer == "downsample":
        base = "shortcut" if rest[0] == "0" else "shortcut.norm"
        rest = rest[1:]
    elif layer.startswith("bn"):
        base = "conv" + layer.removeprefix("bn") + ".norm"
    else:
        base = layer
    return ".".join([stage, block, base, *rest])


def save_lightning_like(
    path: Path, state: dict[str, Tensor], backbone: str, cifar_stem: bool, bn_splits: int = 0
) -> None:
    """The parts of a last.ckpt that load_checkpoint reads, with the query encoder's prefix."""
    model = {"backbone": backbone, "cifar_stem": cifar_stem, "bn_splits": bn_splits}
    torch.save(
        {
            "state_dict": {f"backbone.resnet.{k}": v for k, v in state.items()},
            "hyper_parameters": {"model": model},
        },
        path,
    )


def pickled_globals(raw: bytes) -> set[tuple[str, str]]:
    """The (module, name) pairs a protocol-4 pickle imports when it is loaded."""
    found: set[tuple[str, str]] = set()
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(raw):
        assert opcode.name != "GLOBAL", "expected protocol 4 (STACK_GLOBAL only)"
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(str(arg))
        elif opcode.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
    return found


def run_main(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the renaming -------------------------------------------------------------------------------


def test_every_resnet50_tensor_gets_its_detectron2_name_shape_and_values() -> None:
    state = resnet50_backbone_state()
    weights = convert(state)

    kept = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(kept) == N_RESNET50_TENSORS and len(weights) == N_RESNET50_TENSORS
    assert set(weights) == {expected_name(k) for k in kept}  # nothing else is kept
    for key, value in kept.items():
        array = weights[expected_name(key)]
        assert isinstance(array, np.ndarray) and array.dtype == np.float32
        assert array.shape == tuple(value.shape), key
        np.testing.assert_array_equal(array, value.numpy(), err_msg=key)
    for key, name in EXPECTED_NAMES.items():
        assert expected_name(key) == name  # the test's own renaming agrees with the list
        np.testing.assert_array_equal(weights[name], state[key].numpy())
    assert not [n for n in weights if "num_batches_tracked" in n or "layer" in n or ".bn" in n]
    assert not [n for n in weights if "downsample" in n or n.startswith("fc")]


def test_arrays_are_copies_and_fc_is_dropped() -> None:
    state = torchvision.models.resnet50().state_dict()  # with fc, as torchvision ships it
    weights = convert(state)
    assert len(weights) == N_RESNET50_TENSORS and "fc.weight" not in weights
    before = weights["stem.conv1.weight"].copy()
    state["conv1.weight"].add_(1.0)
    np.testing.assert_array_equal(weights["stem.conv1.weight"], before)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", "ResNet-18"),
        ("resnet34", "ResNet-34"),
        ("resnet50", "ResNet-50"),
        ("resnet101", "ResNet-101"),
        ("resnet152", "ResNet-152"),
    ],
)
def test_identify_resnet_names_torchvision_depths(name: str, expected: str) -> None:
    with torch.device("meta"):
        state = getattr(torchvision.models, name)().state_dict()
    found, evidence = identify_resnet(state)
    assert found == expected
    assert ("BasicBlock" in evidence) == (expected in ("ResNet-18", "ResNet-34"))


def test_wide_and_grouped_resnet50_variants_are_refused_by_shape() -> None:
    for name in ("wide_resnet50_2", "resnext50_32x4d"):
        with torch.device("meta"):
            state = getattr(torchvision.models, name)().state_dict()
        with pytest.raises(ConversionError, match="other shapes"):
            convert(state)


def test_missing_keys_are_listed() -> None:
    state = resnet50_backbone_state()
    del state["layer4.2.bn3.bias"]
    with pytest.raises(
        ConversionError, match=r"1 of its 265 tensors is missing \(layer4\.2\.bn3\.bias\)"
    ):
        convert(state)


def test_partial_resnet50_is_refused_unless_allow_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = resnet50_backbone_state()
    kept = {k: v for k, v in state.items() if not k.startswith(("layer2.", "layer3."))}
    torch.save(kept, tmp_path / "backbone.pt")
    out = tmp_path / "r50.pkl"

    code, _, stderr = run_main(capsys, tmp_path / "backbone.pt", out)
    assert code == 2 and not out.exists()
    assert stderr.startswith(
        f"convert_to_detectron2.py: error: '{tmp_path / 'backbone.pt'}' does not match a "
        "ResNet-50: 160 of its 265 tensors are missing (layer2.0.conv1.weight, "
    )
    assert "... and 152 more). Expected a complete ResNet-50" in stderr
    assert "or pass --allow-partial to load the 105 matching tensors anyway" in stderr

    code, stdout, stderr = run_main(capsys, tmp_path / "backbone.pt", out, "--allow-partial")
    assert code == 0, stderr
    assert stderr.startswith("warning: ") and "160 missing ResNet-50 tensor(s) left out" in stderr
    with open(out, "rb") as f:
        weights = pickle.load(f)["model"]
    assert len(weights) == 105 and "res3.0.conv1.weight" not in weights
    assert "Wrote 105 tensors" in stdout


# --- the command line on hand-made files ---------------------------------------------------------


def test_backbone_pt_gives_a_pickle_with_exactly_the_three_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = resnet50_backbone_state(seed=1)
    torch.save(state, tmp_path / "backbone.pt")
    out = tmp_path / "sub" / "r50.pkl"

    code, stdout, stderr = run_main(capsys, tmp_path / "backbone.pt", out, "--author", "AMix-I")

    assert code == 0 and stderr == ""
    assert f"Wrote {N_RESNET50_TENSORS} tensors" in stdout and str(out) in stdout
    assert "Dropped 53 num_batches_tracked" in stdout
    globals_used = pickled_globals(out.read_bytes())
    # Plain numpy arrays, no torch types, and no numpy-2-only module (numpy._core) in the file.
    assert globals_used == {("numpy", "ndarray"), ("builtins", "bytearray")}
    with open(out, "rb") as f:
        payload = pickle.load(f, encoding="latin1")  # as detectron2's DetectionCheckpointer
    assert set(payload) == {"model", "__author__", "matching_heuristics"}
    assert payload["__author__"] == "AMix-I" and payload["matching_heuristics"] is True
    model = payload["model"]
    assert len(model) == N_RESNET50_TENSORS
    assert all(type(v) is np.ndarray and v.flags.writeable for v in model.values())
    for key, name in EXPECTED_NAMES.items():
        np.testing.assert_array_equal(model[name], state[key].numpy())
    assert not list(out.parent.glob("*.partial"))


def test_resnet18_checkpoint_is_refused_naming_both_depths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "last.ckpt"
    save_lightning_like(ckpt, resnet18_backbone_state(), backbone="resnet18", cifar_stem=False)

    code, stdout, stderr = run_main(capsys, ckpt, tmp_path / "r18.pkl")

    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert "ResNet-18" in stderr and "ResNet-50" in stderr and "backbone=resnet18" in stderr
    assert not (tmp_path / "r18.pkl").exists()


def test_resnet18_backbone_pt_is_detected_by_its_basic_block_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(resnet18_backbone_state(), tmp_path / "backbone.pt")
    code, _, stderr = run_main(capsys, tmp_path / "backbone.pt", tmp_path / "r18.pkl")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "ResNet-18" in stderr and "ResNet-50" in stderr
    assert "layer1.0.conv2 without conv3" in stderr


def test_cifar_stem_is_refused_from_hyper_parameters_and_from_the_conv1_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = resnet50_backbone_state()
    save_lightning_like(tmp_path / "last.ckpt", state, backbone="resnet50", cifar_stem=True)
    code, _, stderr = run_main(capsys, tmp_path / "last.ckpt", tmp_path / "a.pkl")
    assert code == 2 and "CIFAR" in stderr and "cifar_stem=true" in stderr

    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "backbone.pt")
    code, _, stderr = run_main(capsys, tmp_path / "backbone.pt", tmp_path / "b.pkl")
    assert code == 2 and "CIFAR" in stderr and "(64, 3, 3, 3)" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_unknown_keys_are_listed_not_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = resnet50_backbone_state()
    state["layer2.0.se.fc1.weight"] = torch.zeros(4, 4)
    state["projector.weight"] = torch.zeros(4)
    torch.save(state, tmp_path / "backbone.pt")

    code, stdout, stderr = run_main(capsys, tmp_path / "backbone.pt", tmp_path / "x.pkl")

    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "2 key(s) have no detectron2 name" in stderr
    assert "layer2.0.se.fc1.weight" in stderr and "projector.weight" in stderr
    assert not (tmp_path / "x.pkl").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not a checkpoint\n"), "is not a PyTorch file"),
        (lambda p: p.write_bytes(b"\x80\x02garbage"), "is not a readable PyTorch checkpoint"),
        (lambda p: p.write_bytes(b"PK\x03\x04broken zip"), "is not a readable PyTorch checkpoint"),
        (lambda p: torch.save([1, 2, 3], p), "neither a last.ckpt"),
        (lambda p: torch.save({"epoch": 3}, p), "neither a last.ckpt"),
        (lambda p: torch.save({"state_dict": {}}, p), "no model hyper-parameters"),
        (lambda p: None, "does not exist"),
    ],
)
def test_files_that_are_not_checkpoints_get_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    path = tmp_path / "input.ckpt"
    make(path)  # type: ignore[operator]
    code, stdout, stderr = run_main(capsys, path, tmp_path / "out.pkl")
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and message in stderr


def test_output_must_be_a_pkl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(resnet50_backbone_state(), tmp_path / "backbone.pt")
    code, _, stderr = run_main(capsys, tmp_path / "backbone.pt", tmp_path / "r50.pth")
    assert code == 2 and ".pkl" in stderr and not (tmp_path / "r50.pth").exists()


def test_split_batchnorm_statistics_of_a_checkpoint_are_averaged(tmp_path: Path) -> None:
    state = resnet50_backbone_state()
    split = {  # model.bn_splits = 2: two copies of each running statistic, mean = the original
        k: torch.cat([v - 0.25, v + 0.25]) if k.endswith(("running_mean", "running_var")) else v
        for k, v in state.items()
    }
    save_lightning_like(tmp_path / "last.ckpt", split, "resnet50", cifar_stem=False, bn_splits=2)

    loaded, _ = load_backbone_state(tmp_path / "last.ckpt")

    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert loaded[key].shape == value.shape, key
        assert torch.allclose(loaded[key], value.to(loaded[key].dtype)), key


def test_checkpoint_without_query_encoder_is_refused(tmp_path: Path) -> None:
    hparams = {"model": {"backbone": "resnet50", "cifar_stem": False}}
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hyper_parameters": hparams}, tmp_path / "a")
    with pytest.raises(ConversionError, match="no query-encoder weights under 'backbone.resnet.'"):
        load_backbone_state(tmp_path / "a")


# --- a real 1-epoch ResNet-50 run of the project's recipe ----------------------------------------


@pytest.fixture(scope="module")
def resnet50_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out/ of a 1-step ResNet-50 MoCo v2 pre-training on a fake STL-10 (about 15 s on 2 cores)."""
    from lightly_amix.cli import pretrain_main
    from tests.fakes import write_stl10

    tmp = tmp_path_factory.mktemp("r50_run")
    root, out = tmp / "stl10", tmp / "out"
    write_stl10(root, n_train=16, n_test=8, n_unlabeled=16)
    code = pretrain_main(
        ["--data-root", str(root), "--output-dir", str(out), "--epochs", "1",
         "--batch-size", "4", "--limit-batches", "1", "--queue-size", "16",
         "--accelerator", "cpu", "--num-workers", "0", "--backbone", "resnet50",
         "--set", "data.image_size=32"],
        dataset="stl10",
        config_dir=REPO / "recipes" / "configs",
    )  # fmt: skip
    assert code == 0
    return out


@pytest.mark.slow
def test_last_ckpt_and_backbone_pt_of_a_run_convert_identically(
    resnet50_run: Path, tmp_path: Path
) -> None:
    jobs = {
        name: subprocess.Popen(
            [sys.executable, str(SCRIPT), str(resnet50_run / name), str(tmp_path / f"{name}.pkl")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("last.ckpt", "backbone.pt")
    }  # both at once: each spends most of its time importing torch
    results = {name: job.communicate(timeout=300) + (job.returncode,) for name, job in jobs.items()}
    for name, (stdout, stderr, code) in results.items():
        assert code == 0, stderr
        assert f"Wrote {N_RESNET50_TENSORS} tensors" in stdout and f"{name}.pkl" in stdout
    assert "query encoder 'backbone.resnet.*'" in results["last.ckpt"][0]

    payloads = {}
    for name in jobs:
        with open(tmp_path / f"{name}.pkl", "rb") as f:
            payloads[name] = pickle.load(f)
    from_ckpt, from_pt = payloads["last.ckpt"]["model"], payloads["backbone.pt"]["model"]
    assert from_ckpt.keys() == from_pt.keys() and len(from_ckpt) == N_RESNET50_TENSORS
    for name in from_ckpt:
        np.testing.assert_array_equal(from_ckpt[name], from_pt[name], err_msg=name)

    # The query encoder, not the momentum encoder (they differ after one SGD step).
    state = torch.load(resnet50_run / "last.ckpt", weights_only=True)["state_dict"]
    query, momentum = (
        state["backbone.resnet.conv1.weight"],
        state["backbone_momentum.resnet.conv1.weight"],
    )
    assert not torch.equal(query, momentum)
    np.testing.assert_array_equal(from_ckpt["stem.conv1.weight"], query.numpy())
    np.testing.assert_array_equal(
        from_ckpt["res5.2.conv3.norm.running_var"],
        state["backbone.resnet.layer4.2.bn3.running_var"].numpy(),
    )
