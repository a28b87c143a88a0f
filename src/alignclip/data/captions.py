"""Vocabulary and paraphrasing captioner for the synthetic shapes scenes.

Many templates and synonyms make two captions of one scene textually different but semantically close, so a model
must learn the attributes rather than memorise strings, and sentence-embedding similarity (AlignCLIP's separation
term) has something real to measure.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

# Canonical class names (index = label) and the words a caption may use for them.
SHAPES: dict[str, list[str]] = {
    "circle": ["circle", "disc", "dot", "round disk"],
    "square": ["square", "box", "block", "square tile"],
    "triangle": ["triangle", "triangular shape", "three-cornered shape"],
    "star": ["star", "five-pointed star", "star shape"],
    "cross": ["cross", "plus sign", "plus shape"],
    "ring": ["ring", "hoop", "donut", "hollow circle"],
    "diamond": ["diamond", "rhombus", "lozenge"],
    "crescent": ["crescent", "crescent moon", "moon shape"],
}
COLORS: dict[str, list[str]] = {
    "red": ["red", "crimson", "scarlet", "cherry-red"],
    "orange": ["orange", "tangerine", "amber"],
    "yellow": ["yellow", "golden", "lemon-yellow"],
    "green": ["green", "emerald", "grass-green", "leaf-green"],
    "blue": ["blue", "azure", "cobalt", "royal blue"],
    "purple": ["purple", "violet", "plum", "amethyst"],
    "pink": ["pink", "rose", "fuchsia", "bubblegum-pink"],
    "black": ["black", "jet-black", "ebony", "coal-black"],
}
SIZES: dict[str, list[str]] = {
    "small": ["small", "tiny", "little", "miniature"],
    "large": ["large", "big", "huge", "giant"],
}
POSITIONS: dict[str, list[str]] = {
    "left": ["on the left", "on the left side", "at the left", "in the left half", "toward the left"],
    "right": ["on the right", "on the right side", "at the right", "in the right half", "toward the right"],
    "top": ["at the top", "near the top", "in the upper half", "at the top of the image", "up top"],
    "bottom": ["at the bottom", "near the bottom", "in the lower half", "at the bottom of the picture"],
    "centre": ["in the centre", "in the center", "in the middle", "at the centre of the image", "right in the middle"],
}
BACKGROUNDS: dict[str, list[str]] = {
    "white": ["white", "plain white"],
    "grey": ["grey", "gray", "light grey"],
    "cream": ["cream", "beige"],
    "pale blue": ["pale blue", "light blue"],
    "pale green": ["pale green", "light green", "mint"],
}
# Relation of shape A to shape B, keyed by A's position in a two-shape scene; B sits at the opposite position.
RELATIONS: dict[str, list[str]] = {
    "left": ["to the left of", "left of", "on the left of"],
    "right": ["to the right of", "right of", "on the right of"],
    "top": ["above", "over", "higher than"],
    "bottom": ["below", "under", "beneath", "underneath"],
}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

SHAPE_NAMES, COLOR_NAMES, SIZE_NAMES = list(SHAPES), list(COLORS), list(SIZES)
POSITION_NAMES, BACKGROUND_NAMES = list(POSITIONS), list(BACKGROUNDS)

_SINGLE = [
    "{np} {pos}", "there is {np} {pos}", "there's {np} {pos}", "an image showing {np} {pos}",
    "a picture of {np} {pos}", "a photo of {np} {pos}", "a drawing of {np} {pos}", "{np} is {pos}",
    "{np} sits {pos}", "{np} placed {pos}", "{Pos}, there is {np}", "{Pos} you can see {np}",
    "this image contains {np} {pos}", "you can see {np} {pos}", "a simple graphic of {np} {pos}",
    "{np} appears {pos}", "an illustration with {np} {pos}", "{np} drawn {pos}", "{Pos} is {np}",
]
_SINGLE_NO_POS = [
    "{np}", "there is {np}", "an image showing {np}", "a picture of {np}", "a photo of {np}",
    "a drawing of {np}", "this image contains {np}", "you can see {np}", "a simple graphic of {np}",
    "an illustration with {np}", "just {np}",
]
_PAIR = [
    "{npA} {rel} {npB}", "there is {npA} {rel} {npB}", "a picture of {npA} {rel} {npB}",
    "an image showing {npA} {rel} {npB}", "{npA} is {rel} {npB}", "{npA} placed {rel} {npB}",
    "{npA} {posA} and {npB} {posB}", "two shapes: {npA} {posA} and {npB} {posB}",
    "{PosA} {npA}, {posB} {npB}", "{npA} and {npB}, with the {shA} {rel} the {shB}",
    "you can see {npA} {rel} {npB}", "a drawing of two shapes, {npA} {rel} {npB}",
]


@dataclass
class ShapeSpec:
    """One drawn shape: class indices plus the continuous parameters used to render it."""

    shape: int
    color: int
    size: int
    position: int
    rgb: tuple[int, int, int] = (0, 0, 0)
    cx: float = 0.5  # centre and radius as fractions of the image side
    cy: float = 0.5
    radius: float = 0.2
    angle: float = 0.0  # rotation in degrees


@dataclass
class Scene:
    shapes: list[ShapeSpec]
    background: int
    bg_rgb: tuple[int, int, int] = (240, 240, 240)
    noise: float = 0.0

    def labels(self) -> dict[str, int]:
        """Labels of the first (primary) shape, plus scene-level ones; absent second shape -> -1."""
        a = self.shapes[0]
        b = self.shapes[1] if len(self.shapes) > 1 else None
        return {"shape": a.shape, "color": a.color, "size": a.size, "position": a.position,
                "background": self.background, "num_shapes": len(self.shapes) - 1,
                "shape2": b.shape if b else -1, "color2": b.color if b else -1}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(spec: ShapeSpec, rng: random.Random, with_size: bool = True, with_color: bool = True) -> str:
    """'a tiny crimson disc', 'a big square that is cobalt', 'a star coloured golden' ..."""
    shape = rng.choice(SHAPES[SHAPE_NAMES[spec.shape]])
    color = rng.choice(COLORS[COLOR_NAMES[spec.color]]) if with_color else ""
    size = rng.choice(SIZES[SIZE_NAMES[spec.size]]) if with_size else ""
    form = rng.random() if color else 0.0
    if form < 0.6:
        words = " ".join(w for w in (size, color, shape) if w)
    elif form < 0.8:
        words = " ".join(w for w in (size, shape) if w) + f" that is {color}"
    else:
        words = " ".join(w for w in (size, shape) if w) + f" {rng.choice(['coloured', 'colored'])} {color}"
    return f"{_article(words)} {words}"


def _finish(text: str, scene: Scene, rng: random.Random, background_prob: float) -> str:
    if rng.random() < background_prob:
        bg = rng.choice(BACKGROUNDS[BACKGROUND_NAMES[scene.background]])
        text += rng.choice([f" on a {bg} background", f" against a {bg} backdrop"])
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    return text + "." if rng.random() < 0.5 else text


def caption(scene: Scene, rng: random.Random, complete: bool = False, background_prob: float = 0.2) -> str:
    """One random paraphrase of `scene`; unless `complete`, size/position/colour are sometimes left out."""
    drop = (lambda p: False) if complete else (lambda p: rng.random() < p)
    if len(scene.shapes) == 1:
        spec = scene.shapes[0]
        np_ = noun_phrase(spec, rng, with_size=not drop(0.2), with_color=not drop(0.05))
        if drop(0.15):
            return _finish(rng.choice(_SINGLE_NO_POS).format(np=np_), scene, rng, background_prob)
        pos = rng.choice(POSITIONS[POSITION_NAMES[spec.position]])
        text = rng.choice(_SINGLE).format(np=np_, pos=pos, Pos=pos[0].upper() + pos[1:])
        return _finish(text, scene, rng, background_prob)
    a, b = scene.shapes[0], scene.shapes[1]
    if rng.random() < 0.5:  # describe from the second shape's point of view: "B below A" == "A above B"
        a, b = b, a
    pos_a, pos_b = POSITION_NAMES[a.position], POSITION_NAMES[b.position]
    templates = _PAIR if a.shape != b.shape else [t for t in _PAIR if "{shA}" not in t]
    pa, pb = rng.choice(POSITIONS[pos_a]), rng.choice(POSITIONS[pos_b])
    text = rng.choice(templates).format(
        npA=noun_phrase(a, rng, with_size=not drop(0.25), with_color=not drop(0.05)),
        npB=noun_phrase(b, rng, with_size=not drop(0.25), with_color=not drop(0.05)),
        rel=rng.choice(RELATIONS[pos_a]), posA=pa, posB=pb, PosA=pa[0].upper() + pa[1:],
        shA=rng.choice(SHAPES[SHAPE_NAMES[a.shape]]), shB=rng.choice(SHAPES[SHAPE_NAMES[b.shape]]))
    return _finish(text, scene, rng, background_prob)
