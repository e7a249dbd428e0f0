"""StreetViewAugment: synthesise a customer ("street") photo from a clean catalog ("shop") image.

The shop image is a light product on black (Fashion-MNIST style). A street view puts the product on
a coloured, gradient or textured background at a random position, scale and rotation (possibly cut
off at the border), tints it, and degrades the photo: uneven lighting, brightness/contrast, blur,
sensor noise and JPEG artefacts. Every parameter is drawn at random so the model learns to ignore
all of them; the output size varies too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass
class StreetViewAugment:
    """Callable ``aug(image, rng) -> PIL RGB image``; ``aug.last_params`` describes the last view.

    ``size`` is the (min, max) of the longer side in pixels; ``scale`` the item's size as a fraction
    of the shorter side; ``cutoff`` the largest fraction of the item that may lie outside the frame.
    """

    size: tuple[int, int] = (64, 320)
    aspect: tuple[float, float] = (0.75, 1.33)
    scale: tuple[float, float] = (0.45, 1.0)
    max_rotation: float = 25.0
    cutoff: float = 0.2
    blur: tuple[float, float] = (0.0, 1.5)  # gaussian radius, in units of (output size / 64) px
    noise: tuple[float, float] = (0.0, 0.08)  # std of additive noise on [0, 1] values
    jpeg_quality: tuple[int, int] = (15, 95)
    p_jpeg: float = 0.8
    #: 0..1 scales how far each setting departs from a clean, centred, full-size view (curriculum)
    difficulty: float = 1.0

    def __post_init__(self) -> None:
        self.last_params: dict = {}

    def _range(self, lo: float, hi: float, easy: float) -> tuple[float, float]:
        """Shrink (lo, hi) towards ``easy`` as difficulty drops."""
        d = self.difficulty
        return easy + d * (lo - easy), easy + d * (hi - easy)

    # -- backgrounds -------------------------------------------------------------------------
    @staticmethod
    def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
        """Low-frequency random field in [0, 1]: a small random grid upsampled bilinearly."""
        small = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
        mode = "RGB" if channels == 3 else "L"
        img = Image.fromarray(small if channels == 3 else small[..., 0], mode)
        big = np.asarray(img.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        return big.reshape(h, w, channels)

    def _background(self, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
        kind = rng.choice(["solid", "linear", "radial", "texture", "stripes", "noise"])
        c1, c2 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        yy /= max(h - 1, 1)
        xx /= max(w - 1, 1)
        if kind == "solid":
            bg = np.broadcast_to(c1, (h, w, 3)).copy()
        elif kind == "linear":
            a = rng.uniform(0, 2 * np.pi)
            t = xx * np.cos(a) + yy * np.sin(a)
            t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
            bg = c1 * (1 - t[..., None]) + c2 * t[..., None]
        elif kind == "radial":
            cy, cx = rng.random(2)
            t = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            t = np.clip(t / max(t.max(), 1e-6), 0, 1)
            bg = c1 * (1 - t[..., None]) + c2 * t[..., None]
        elif kind == "texture":
            field = self._smooth_field(rng, h, w, int(rng.integers(3, 12)), 3)
            bg = c1 * (1 - field) + c2 * field
        elif kind == "stripes":
            a = rng.uniform(0, np.pi)
            period = rng.uniform(0.05, 0.3)
            t = xx * np.cos(a) + yy * np.sin(a)
            s = (np.sin(2 * np.pi * t / period) + 1) / 2
            if rng.random() < 0.5:
                s = (s > 0.5).astype(np.float32)
            bg = c1 * (1 - s[..., None]) + c2 * s[..., None]
        else:  # fine noise texture (fabric, gravel)
            field = rng.random((h, w, 1), dtype=np.float32)
            field = (
                np.asarray(
                    Image.fromarray((field[..., 0] * 255).astype(np.uint8)).filter(
                        ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0))
                    ),
                    dtype=np.float32,
                )[..., None]
                / 255.0
            )
            field = np.clip((field - 0.5) * 3 + 0.5, 0, 1)
            bg = c1 * (1 - field) + c2 * field
        return bg.astype(np.float32), str(kind)

    # -- the view ----------------------------------------------------------------------------
    def __call__(self, image: Image.Image | np.ndarray, rng: np.random.Generator) -> Image.Image:
        if isinstance(image, Image.Image):
            item = np.asarray(image.convert("L"), dtype=np.uint8)
        else:
            item = np.asarray(image, dtype=np.uint8)
        border = np.concatenate([item[0], item[-1], item[:, 0], item[:, -1]])
        if border.mean() > 127:  # a product on a light background: make it light on black
            item = 255 - item
        long_side = int(rng.integers(self.size[0], self.size[1] + 1))
        ratio = rng.uniform(*self.aspect)
        if ratio >= 1:
            w, h = long_side, max(16, int(round(long_side / ratio)))
        else:
            h, w = long_side, max(16, int(round(long_side * ratio)))
        bg, bg_kind = self._background(rng, h, w)

        # item mask: scale, rotate, place
        d = self.difficulty
        scale = rng.uniform(*self._range(self.scale[0], self.scale[1], 0.9))
        side = max(8, int(round(scale * min(h, w))))
        angle = rng.uniform(-self.max_rotation * d, self.max_rotation * d)
        mask_img = Image.fromarray(item, "L").resize((side, side), Image.Resampling.BICUBIC)
        mask_img = mask_img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
        mh, mw = mask_img.height, mask_img.width
        slack_x = slack_y = int(self.cutoff * d * side)
        x0 = int(rng.integers(-slack_x, max(-slack_x + 1, w - mw + slack_x + 1)))
        y0 = int(rng.integers(-slack_y, max(-slack_y + 1, h - mh + slack_y + 1)))
        x0 = min(max(x0, -slack_x), w - 1) if mw > w else x0
        y0 = min(max(y0, -slack_y), h - 1) if mh > h else y0
        inten = np.zeros((h, w), dtype=np.float32)
        m = np.asarray(mask_img, dtype=np.float32) / 255.0
        sx0, sy0 = max(0, -x0), max(0, -y0)
        dx0, dy0 = max(0, x0), max(0, y0)
        cw, ch = min(mw - sx0, w - dx0), min(mh - sy0, h - dy0)
        if cw > 0 and ch > 0:
            inten[dy0 : dy0 + ch, dx0 : dx0 + cw] = m[sy0 : sy0 + ch, sx0 : sx0 + cw]
        visible = float(inten.sum() / max(m.sum(), 1e-6))

        # compose: opacity from the product's intensity, colour = tint shaded by the intensity;
        # the tint is redrawn until the product stands out from the background (a photo where it
        # does not is not a usable query), light or dark against it
        gain = rng.uniform(1.0, 2.5)
        alpha = np.clip(inten * gain, 0, 1) ** rng.uniform(0.7, 1.3)
        flat = rng.uniform(0.0, 0.4)
        luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        under = alpha > 0.3
        bg_luma = float((bg[under] if under.any() else bg.reshape(-1, 3)).mean(0) @ luma)
        min_gap = 0.25 * (0.4 + 0.6 * (1 - d))
        for _ in range(20):
            tint = rng.random(3, dtype=np.float32)
            if rng.random() < 0.5:  # a light product half of the time, as in the catalog
                tint = 0.5 + 0.5 * tint
            if abs(float(tint @ luma) * (flat + (1 - flat) * 0.7) - bg_luma) >= min_gap:
                break
        else:
            tint = np.full(3, 1.0 if bg_luma < 0.5 else 0.1, dtype=np.float32)
        item_rgb = tint * (flat + (1 - flat) * inten[..., None])
        out = bg * (1 - alpha[..., None]) + item_rgb * alpha[..., None]

        # photo: uneven lighting, brightness/contrast, blur, noise, JPEG
        light = rng.uniform(*self._range(0.4, 1.0, 1.0)) + rng.uniform(0.0, 0.6 * d) * self._smooth_field(
            rng, h, w, 2, 1
        )
        out = out * light
        contrast = rng.uniform(*self._range(0.5, 1.4, 1.0))
        out = (out - out.mean()) * contrast + out.mean() + rng.uniform(-0.2 * d, 0.2 * d)
        out = np.clip(out, 0, 1)
        photo = Image.fromarray((out * 255).astype(np.uint8), "RGB")
        radius = rng.uniform(*self.blur) * d * long_side / 64
        if radius > 0.2:
            photo = photo.filter(ImageFilter.GaussianBlur(radius))
        sigma = rng.uniform(*self.noise) * d
        if sigma > 0.005:
            arr = np.asarray(photo, dtype=np.float32)
            if rng.random() < 0.5:
                noise = rng.normal(0, sigma * 255, (h, w, 1))
            else:
                noise = rng.normal(0, sigma * 255, (h, w, 3))
            photo = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8), "RGB")
        quality = None
        if rng.random() < self.p_jpeg:
            lo, hi = self._range(self.jpeg_quality[0], self.jpeg_quality[1], self.jpeg_quality[1])
            quality = int(rng.integers(int(lo), int(hi) + 1))
            buf = io.BytesIO()
            photo.save(buf, format="JPEG", quality=quality)
            buf.seek(0)
            photo = Image.open(buf).convert("RGB")
        self.last_params = {
            "size": (w, h),
            "scale": scale,
            "rotation": angle,
            # where the item is: the centre (x, y) and side of its unrotated square, in pixels
            "box": (x0 + mw / 2, y0 + mh / 2, float(side), angle),
            "visible": visible,
            "background": bg_kind,
            "blur": radius,
            "noise": sigma,
            "jpeg_quality": quality,
        }
        return photo

    @staticmethod
    def is_clean(params: dict) -> bool:
        """The 'clean' subset of the protocol: the item is whole, not tiny and not heavily degraded."""
        return (
            params.get("visible", 1.0) >= 0.98
            and params.get("scale", 1.0) >= 0.6
            and abs(params.get("rotation", 0.0)) <= 15
            and params.get("noise", 0.0) <= 0.05
        )
