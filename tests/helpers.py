"""Small things several tests share (import as `from tests.helpers import ...`)."""

from __future__ import annotations

# train.model for the tiny backbone in a test's params file: the embedded profile's sizes
TINY_MODEL = {"rep_dim": 32, "hidden_dim": 32, "inp_channels": [16, 32, 32], "inp_grid": 4, "frc_heads": 4}


def face_change(output, target) -> tuple[float, float]:
    """(mean absolute difference inside the target's face box, in the outer 12-px frame of the image), in grey
    levels: a model that changed the face, and only the face, has the first large and the second near zero (the
    invisible watermark moves pixels by a level or two)."""
    import numpy as np
    from PIL import Image

    from facex_data.faces import detect_faces

    def rgb(image):
        image = Image.open(image) if not isinstance(image, Image.Image) else image
        return np.asarray(image.convert("RGB"), np.float32)

    out, tgt = rgb(output), rgb(target)
    assert out.shape == tgt.shape, (out.shape, tgt.shape)
    left, top, right, bottom = detect_faces(tgt.astype(np.uint8))[0]
    inside = np.abs(out[max(top, 0) : bottom, max(left, 0) : right] - tgt[max(top, 0) : bottom, max(left, 0) : right])
    diff = np.abs(out - tgt)
    frame = np.concatenate([diff[:12].reshape(-1), diff[-12:].reshape(-1), diff[:, :12].reshape(-1),
                            diff[:, -12:].reshape(-1)])  # fmt: skip
    return float(inside.mean()), float(frame.mean())
