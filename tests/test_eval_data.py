"""IDX/Fashion-MNIST and class-folder readers, feature extraction and embedding files of any model."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from alignclip.evaluation.datasets import (FASHION_MNIST_CLASSES, FashionMNIST, ImageFolderClasses, read_idx,
                                           split_stratified)
from alignclip.evaluation.features import extract_features, load_embeddings


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_fashion(root: Path, n: int, prefix: str = "t10k", gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.idx", array, gz)), array)
    big_endian = np.array([1, -2, 70000], dtype=">i4")
    assert read_idx(write_idx(tmp_path / "b.idx", big_endian, gz)).tolist() == [1, -2, 70000]


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"PNG not idx")
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx(tmp_path / "junk")
    good = write_idx(tmp_path / "t", np.zeros((4, 5), dtype=np.uint8), gz=False)
    good.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(good)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "missing.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx(tmp_path: Path, gz: bool) -> None:
    images, labels = write_fashion(tmp_path, 12, gz=gz)
    data = FashionMNIST(tmp_path, train=False, image_size=16)
    assert len(data) == 12 and data.classnames == FASHION_MNIST_CLASSES and data.classnames[0] == "T-shirt/top"
    assert data.targets.tolist() == labels.tolist()
    image = data[3]
    assert image.shape == (3, 16, 16)
    # grey -> RGB: the three channels carry the same picture (up to the per-channel normalisation)
    from alignclip.data.transforms import CLIP_MEAN, CLIP_STD
    rgb = [image[c] * CLIP_STD[c] + CLIP_MEAN[c] for c in range(3)]
    assert torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)
    sub = data.subset(5, seed=1)
    assert len(sub) == 5 and sub.classnames == data.classnames and sub[0].shape == (3, 16, 16)


def test_fashion_mnist_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(tmp_path / "nowhere")
    monkeypatch.setenv("ALIGNCLIP_FASHION_MNIST", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[.gz\] not found"):
        FashionMNIST()


def make_folder(root: Path) -> Path:
    for name, color in (("golden_retriever", (200, 160, 40)), ("tabby_cat", (90, 90, 90))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 12), color).save(root / name / f"{i}.png")
    (root / "tabby_cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_classes(tmp_path: Path) -> None:
    data = ImageFolderClasses(make_folder(tmp_path / "pets"), image_size=8)
    assert data.classnames == ["golden retriever", "tabby cat"]
    assert data.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert data[0].shape == (3, 8, 8)
    first, second = split_stratified(data.targets, 0.5, seed=0)
    assert sorted(first + second) == list(range(6)) and not set(first) & set(second)
    assert sorted(data.targets[first].tolist()) == [0, 0, 1, 1]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolderClasses(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderClasses(tmp_path / "empty")
    root = make_folder(tmp_path / "broken")
    (root / "tabby_cat" / "bad.png").write_bytes(b"not a png")
    data = ImageFolderClasses(root, image_size=8)
    with pytest.raises(ValueError, match="cannot read image"):
        data[data.samples.index((root / "tabby_cat" / "bad.png", 1))]


class MeanColour(nn.Module):
    """Image feature = per-channel mean (+1 so it never vanishes); records train/eval mode at call time."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.modes: list[bool] = []

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        self.modes.append(self.training)
        features = images.mean(dim=(2, 3)) * self.scale + 1
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features


class DictSet(Dataset):
    def __init__(self, images: torch.Tensor, broken: int | None = None) -> None:
        self.images, self.broken = images, broken

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict | None:
        return None if index == self.broken else {"image": self.images[index], "caption": "x"}


def test_extract_features_from_tensor_dataset_and_loader() -> None:
    images = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    model = MeanColour().train()
    from_tensor = extract_features(model, images, batch_size=3)
    assert from_tensor.shape == (10, 3) and not from_tensor.requires_grad
    assert torch.allclose(from_tensor.norm(dim=1), torch.ones(10))
    assert torch.allclose(extract_features(model, DictSet(images), batch_size=4), from_tensor)
    loader = DataLoader(DictSet(images), batch_size=4, collate_fn=lambda s: {"images": torch.stack([x["image"] for x in s])})
    assert torch.allclose(extract_features(model, loader), from_tensor)
    assert not any(model.modes) and model.training  # eval mode inside, restored afterwards
    with pytest.raises(ValueError, match="unreadable sample"):
        extract_features(model, DictSet(images, broken=2))
    with pytest.raises(ValueError, match="no images"):
        extract_features(model, iter([]))


def test_load_embeddings_all_formats(tmp_path: Path) -> None:
    a = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "one.npz", emb=a)
    np.savez(tmp_path / "two.npz", image=a, text=a * 2)
    save_file({"image": a, "text": a * 2}, str(tmp_path / "two.safetensors"))
    assert np.array_equal(load_embeddings(tmp_path / "a.npy"), a)
    assert np.array_equal(load_embeddings(tmp_path / "one.npz"), a)
    assert np.array_equal(load_embeddings(tmp_path / "two.npz", key="text"), a * 2)
    assert np.array_equal(load_embeddings(tmp_path / "two.safetensors", key="image"), a)
    with pytest.raises(ValueError, match=r"holds 2 arrays \['image', 'text'\]; pick one"):
        load_embeddings(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="no array 'img'"):
        load_embeddings(tmp_path / "two.safetensors", key="img")
    with pytest.raises(FileNotFoundError, match="embedding file not found"):
        load_embeddings(tmp_path / "missing.npy")
    (tmp_path / "e.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="expected .npy, .npz or .safetensors"):
        load_embeddings(tmp_path / "e.csv")
    np.save(tmp_path / "flat.npy", a[0])
    with pytest.raises(ValueError, match="must be 2-D"):
        load_embeddings(tmp_path / "flat.npy")
