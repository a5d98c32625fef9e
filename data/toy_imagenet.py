"""A deterministic, learnable toy data set of real JPEG files in ImageNet layout.

Each class is a shape (disc, square, triangle, ...) drawn in a class-typical hue, jittered
by +-0.6 of a class band so that a third of the images share their hue with a neighbouring
class, on a noisy background of random colour, at a random position, size and rotation.
Colour alone gets about 83% right; the rest needs the shape. A small CNN learns both in a
few epochs. Same arguments, same bytes: the drawing RNG is
seeded per image, and Pillow's JPEG encoder is deterministic.

    python -m data.toy_imagenet OUT_DIR [--classes 10] [--train-per-class 260]
        [--val-per-class 50] [--size 64] [--seed 0]
"""
import argparse
import colorsys
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "star", "hbars",
          "vbars", "checker", "crescent", "hexagon")


def _polygon(cx, cy, r, sides, rotation, star=False):
    points = []
    count = sides * 2 if star else sides
    for k in range(count):
        radius = r * (0.45 if star and k % 2 else 1.0)
        a = rotation + 2 * math.pi * k / count
        points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return points


def draw_shape(draw, shape, cx, cy, r, rotation, fill, background):
    if shape == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, r, 4, rotation + math.pi / 4), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r, 3, rotation), fill=fill)
    elif shape == "cross":
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        q = r * 0.55
        draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=background)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)], fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r, 5, rotation, star=True), fill=fill)
    elif shape in ("hbars", "vbars"):
        for k in range(-2, 3):
            o = k * r / 2.5
            box = ([cx - r, cy + o - r / 8, cx + r, cy + o + r / 8] if shape == "hbars"
                   else [cx + o - r / 8, cy - r, cx + o + r / 8, cy + r])
            draw.rectangle(box, fill=fill)
    elif shape == "checker":
        step = r / 2
        for i in range(4):
            for j in range(4):
                if (i + j) % 2 == 0:
                    x0, y0 = cx - r + i * step, cy - r + j * step
                    draw.rectangle([x0, y0, x0 + step, y0 + step], fill=fill)
    elif shape == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        o = r * 0.45
        draw.ellipse([cx - r + o, cy - r, cx + r + o, cy + r], fill=background)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, rotation), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape}")


def _rgb(hue, saturation, value):
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def make_image(class_index, num_classes, size, rng):
    """One picture of class ``class_index`` as a PIL image."""
    background = _rgb(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.9))
    noise = rng.normal(0, 18, (size, size, 3))
    base = np.clip(np.array(background, np.float32) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(base)   # uint8 (h, w, 3): RGB; the mode argument is deprecated
    draw = ImageDraw.Draw(img)
    # Hue bands overlap their neighbours (jitter wider than the band), so shape matters.
    hue = (class_index + rng.uniform(-0.6, 0.6)) / num_classes
    fill = _rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    r = size * rng.uniform(0.22, 0.38)
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    draw_shape(draw, SHAPES[class_index], cx, cy, r, rng.uniform(0, 2 * math.pi), fill, background)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))


# The file that marks a directory as a toy set this module wrote (the Makefile's toy-data
# and clean remove a directory only when it holds this file).
MARKER = ".toy_imagenet"


def write_split(out_dir, split, num_classes, per_class, size, seed, quality=90):
    for c in range(num_classes):
        folder = os.path.join(out_dir, split, f"n{c:08d}_{SHAPES[c]}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, c, i])
            path = os.path.join(folder, f"{split}_{c:02d}_{i:05d}.JPEG")
            make_image(c, num_classes, size, rng).save(path, "JPEG", quality=quality)


def generate(out_dir, classes=10, train_per_class=260, val_per_class=50, size=64, seed=0):
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"--classes must be between 2 and {len(SHAPES)}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, MARKER), "w") as f:   # `make` removes only such dirs
        f.write("written by python -m data.toy_imagenet\n")
    write_split(out_dir, "train", classes, train_per_class, size, seed)
    write_split(out_dir, "val", classes, val_per_class, size, seed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=260)
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        generate(a.out_dir, a.classes, a.train_per_class, a.val_per_class, a.size, a.seed)
    except ValueError as e:
        sys.exit(f"toy_imagenet: {e}")
    n = a.classes * (a.train_per_class + a.val_per_class)
    print(f"wrote {n} JPEG files ({a.classes} classes, {a.size}px) to {a.out_dir}")


if __name__ == "__main__":
    main()
