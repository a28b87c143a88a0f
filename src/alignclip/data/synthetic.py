"""SyntheticShapes: the built-in zero-setup image-text dataset (one or two coloured shapes + paraphrased captions).

Every sample is a pure function of (seed, split, index), drawn on the fly, so the dataset can have 10^7 samples with
no storage, every worker/rank sees the same data, and the held-out split never overlaps the training stream.
"""
from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from .captions import (BACKGROUND_NAMES, COLOR_NAMES, COLORS, OPPOSITE, POSITION_NAMES, SHAPE_NAMES, SIZE_NAMES,
                       Scene, ShapeSpec, caption)
from .transforms import CLIP_MEAN, CLIP_STD

COLOR_RGB = {"red": (215, 40, 40), "orange": (245, 140, 20), "yellow": (240, 210, 30), "green": (40, 160, 60),
             "blue": (40, 80, 210), "purple": (130, 50, 170), "pink": (240, 110, 180), "black": (25, 25, 25)}
BACKGROUND_RGB = {"white": (246, 246, 246), "grey": (190, 190, 190), "cream": (240, 230, 200),
                  "pale blue": (210, 225, 245), "pale green": (215, 238, 215)}
_CENTRES = {"left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7), "centre": (0.5, 0.5)}
_MEAN = np.asarray(CLIP_MEAN, dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.asarray(CLIP_STD, dtype=np.float32) * 255.0)

ATTRIBUTES: dict[str, list[str]] = {"shape": SHAPE_NAMES, "color": COLOR_NAMES, "size": SIZE_NAMES,
                                    "position": POSITION_NAMES, "background": BACKGROUND_NAMES,
                                    "num_shapes": ["one", "two"]}


def zeroshot_tasks() -> dict[str, tuple[list[str], list[str]]]:
    """attribute -> (class names in label order, prompt templates with '{}') for zero-shot classification."""
    return {
        "shape": (SHAPE_NAMES, ["a picture of a {}.", "a {} shape.", "an image of a {}.",
                                "there is a {} in the picture.", "a drawing of a {}."]),
        "color": (COLOR_NAMES, ["a {} shape.", "a picture of something {}.", "an image with a {} object in it.",
                                "a drawing in {}.", "a {} object."]),
        "size": (SIZE_NAMES, ["a {} shape.", "a picture of a {} object.", "an image with a {} shape in it."]),
        "position": (POSITION_NAMES, ["a shape at the {}.", "a picture with an object at the {}.",
                                      "an image of a shape placed at the {}."]),
    }


def _rng(seed: int, split: str, index: int, tag: str = "") -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so this is stable across runs and platforms.
    return random.Random(f"{seed}:{split}:{index}:{tag}")


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _spec(rng: random.Random, position: str, two: bool) -> ShapeSpec:
    shape, color = rng.randrange(len(SHAPE_NAMES)), rng.randrange(len(COLOR_NAMES))
    size = rng.randrange(2)
    if two:  # keep two large shapes from touching: centres 0.27/0.73, radius <= 0.21
        radius = rng.uniform(0.11, 0.14) if size == 0 else rng.uniform(0.19, 0.21)
        cx, cy = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73)}[position]
    else:
        radius = rng.uniform(0.12, 0.15) if size == 0 else rng.uniform(0.21, 0.25)
        cx, cy = _CENTRES[position]
    d = 0.02 if two else 0.03
    return ShapeSpec(shape=shape, color=color, size=size, position=POSITION_NAMES.index(position),
                     rgb=_jitter(COLOR_RGB[COLOR_NAMES[color]], rng, 18), cx=cx + rng.uniform(-d, d),
                     cy=cy + rng.uniform(-d, d), radius=radius, angle=rng.uniform(-12.0, 12.0))


def sample_scene(rng: random.Random, two_shape_prob: float = 0.3) -> Scene:
    """Draw a random scene: one shape anywhere, or two distinguishable shapes side by side / stacked."""
    background = rng.randrange(len(BACKGROUND_NAMES))
    bg_rgb = _jitter(BACKGROUND_RGB[BACKGROUND_NAMES[background]], rng, 8)
    if rng.random() < two_shape_prob:
        pos_a = rng.choice(["left", "right", "top", "bottom"])
        a = _spec(rng, pos_a, two=True)
        b = _spec(rng, OPPOSITE[pos_a], two=True)
        while (b.shape, b.color) == (a.shape, a.color):  # captions must be able to tell them apart
            b = _spec(rng, OPPOSITE[pos_a], two=True)
        shapes = [a, b]
    else:
        shapes = [_spec(rng, rng.choice(POSITION_NAMES), two=False)]
    return Scene(shapes=shapes, background=background, bg_rgb=bg_rgb, noise=rng.uniform(0.0, 8.0))


def _polygon(spec: ShapeSpec, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    name = SHAPE_NAMES[spec.shape]
    if name == "square":
        pts = [(math.copysign(0.85, x), math.copysign(0.85, y)) for x, y in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
    elif name == "triangle":
        pts = [(1.15 * math.cos(math.radians(a)), 1.15 * math.sin(math.radians(a)) + 0.15) for a in (-90, 30, 150)]
    elif name == "diamond":
        pts = [(0.0, -1.05), (0.72, 0.0), (0.0, 1.05), (-0.72, 0.0)]
    elif name == "star":
        pts = [((1.1 if k % 2 == 0 else 0.47) * math.cos(math.radians(-90 + 36 * k)),
                (1.1 if k % 2 == 0 else 0.47) * math.sin(math.radians(-90 + 36 * k)) + 0.08) for k in range(10)]
    else:  # cross / plus sign
        t, e = 0.3, 0.95
        pts = [(-t, -e), (t, -e), (t, -t), (e, -t), (e, t), (t, t), (t, e), (-t, e), (-t, t), (-e, t), (-e, -t),
               (-t, -t)]
    c, s = math.cos(math.radians(spec.angle)), math.sin(math.radians(spec.angle))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def render(scene: Scene, image_size: int, rng: random.Random, supersample: int = 2) -> np.ndarray:
    """Scene -> uint8 array [S, S, 3]: draw at `supersample`x, box-downscale (anti-aliasing), add light noise."""
    big = image_size * supersample
    image = Image.new("RGB", (big, big), scene.bg_rgb)
    draw = ImageDraw.Draw(image)
    for spec in scene.shapes:
        cx, cy, r = spec.cx * big, spec.cy * big, spec.radius * big
        name = SHAPE_NAMES[spec.shape]
        box = (cx - r, cy - r, cx + r, cy + r)
        if name == "circle":
            draw.ellipse(box, fill=spec.rgb)
        elif name == "ring":
            draw.ellipse(box, outline=spec.rgb, width=max(1, round(0.38 * r)))
        elif name == "crescent":  # a disc minus an offset disc, via a mask so the other shape is never erased
            mask = Image.new("L", (big, big), 0)
            mdraw = ImageDraw.Draw(mask)
            mdraw.ellipse(box, fill=255)
            ox, oy = cx + 0.45 * r, cy - 0.25 * r
            mdraw.ellipse((ox - 0.82 * r, oy - 0.82 * r, ox + 0.82 * r, oy + 0.82 * r), fill=0)
            image.paste(spec.rgb, mask=mask)
        else:
            draw.polygon(_polygon(spec, cx, cy, r), fill=spec.rgb)
    if supersample > 1:
        image = image.reduce(supersample)
    array = np.asarray(image, dtype=np.int16)
    if scene.noise > 0:
        raw = np.frombuffer(rng.randbytes(array.size), dtype=np.uint8).reshape(array.shape).astype(np.int16)
        array = array + ((raw - 128) * int(scene.noise * 16) >> 11)  # uniform in about [-noise, +noise]
    return np.clip(array, 0, 255).astype(np.uint8)


def _to_normalized_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 [S,S,3] -> CLIP-normalised float [3,S,S] without a PIL round trip (the fast default path)."""
    return torch.from_numpy(((array.astype(np.float32) - _MEAN) * _INV_STD).transpose(2, 0, 1).copy())


class SyntheticShapes(torch.utils.data.Dataset):
    """Map-style dataset of procedurally drawn shapes; sample i = f(seed, train/eval split, i).

    `transform` (optional) takes a PIL image and overrides the default exact-size CLIP normalisation; the default
    applies no augmentation so a sample is bit-identical wherever and whenever it is drawn.
    """

    attributes = ATTRIBUTES

    def __init__(self, num_samples: int, seed: int = 0, image_size: int = 32, train: bool = True,
                 two_shape_prob: float = 0.3, supersample: int | None = None,
                 transform: Callable[[Image.Image], torch.Tensor] | None = None) -> None:
        if num_samples < 1:
            raise ValueError(f"SyntheticShapes needs num_samples >= 1, got {num_samples}")
        if image_size < 8:
            raise ValueError(f"SyntheticShapes needs image_size >= 8, got {image_size}")
        self.num_samples, self.seed, self.image_size, self.train = num_samples, seed, image_size, train
        self.split = "train" if train else "eval"
        self.two_shape_prob = two_shape_prob
        # 2x supersampling is ample anti-aliasing at small sizes; big images are already smooth enough.
        self.supersample = supersample if supersample is not None else (2 if image_size <= 128 else 1)
        self.transform = transform

    def __len__(self) -> int:
        return self.num_samples

    def _check(self, index: int) -> int:
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for SyntheticShapes of {self.num_samples} samples")
        return index

    def scene(self, index: int) -> Scene:
        return sample_scene(_rng(self.seed, self.split, self._check(index)), self.two_shape_prob)

    def labels_for(self, index: int) -> dict[str, int]:
        return self.scene(index).labels()

    def captions_for(self, index: int, k: int, complete: bool = False) -> list[str]:
        """k textually different paraphrases of sample `index`'s scene; the first is its training caption."""
        index = self._check(index)
        scene, out, tries = self.scene(index), [], 0
        while len(out) < k and tries < 50 * k:
            text = caption(scene, _rng(self.seed, self.split, index, f"cap{tries}"), complete=complete)
            if text not in out:
                out.append(text)
            tries += 1
        return out + [out[-1]] * (k - len(out))  # only if the scene had fewer paraphrases than asked for

    def _draw(self, index: int) -> tuple[np.ndarray, str, dict[str, int]]:
        index = self._check(index)
        rng = _rng(self.seed, self.split, index)
        scene = sample_scene(rng, self.two_shape_prob)
        array = render(scene, self.image_size, rng, self.supersample)
        text = caption(scene, _rng(self.seed, self.split, index, "cap0"))
        return array, text, scene.labels()

    def raw(self, index: int) -> tuple[Image.Image, str]:
        """(PIL image, caption) for packing into shards."""
        array, text, _ = self._draw(index)
        return Image.fromarray(array), text

    def __getitem__(self, index: int) -> dict:
        array, text, labels = self._draw(index)
        image = self.transform(Image.fromarray(array)) if self.transform else _to_normalized_tensor(array)
        return {"image": image, "caption": text, "labels": labels}

    def zeroshot_tasks(self) -> dict[str, tuple[list[str], list[str]]]:
        return zeroshot_tasks()


_STS_ATTRS = ("shape", "color", "size", "position")


def synthetic_sts(num_pairs: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """Caption pairs with gold similarity 0..5 = 5 * (shared attributes of the two single-shape scenes) / 4.

    The number of changed attributes is drawn uniformly from 0..4, so the gold scores spread over the whole range;
    both captions mention every attribute (complete paraphrases), so the gold is defined by the text alone.
    """
    rng = random.Random(f"sts:{seed}")
    pairs = []
    for _ in range(num_pairs):
        a = _spec(rng, rng.choice(POSITION_NAMES), two=False)
        changed = rng.sample(_STS_ATTRS, rng.randint(0, len(_STS_ATTRS)))
        values = {"shape": a.shape, "color": a.color, "size": a.size, "position": a.position}
        for attr in changed:
            n = len(ATTRIBUTES[attr])
            values[attr] = (values[attr] + rng.randrange(1, n)) % n
        b = ShapeSpec(**values)
        scene_a, scene_b = Scene([a], background=0), Scene([b], background=0)
        text_a = caption(scene_a, rng, complete=True, background_prob=0.0)
        text_b = caption(scene_b, rng, complete=True, background_prob=0.0)
        for _ in range(10):  # paraphrases, not copies, even for identical scenes
            if text_b != text_a:
                break
            text_b = caption(scene_b, rng, complete=True, background_prob=0.0)
        pairs.append((text_a, text_b, 5.0 * (len(_STS_ATTRS) - len(changed)) / len(_STS_ATTRS)))
    return pairs


__all__ = ["SyntheticShapes", "zeroshot_tasks", "synthetic_sts", "ATTRIBUTES", "COLORS", "sample_scene", "render"]
