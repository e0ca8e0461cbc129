"""Small things several tests share (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


def write_phone_clip(path, frames, rotation: int = 0):
    """An H.264 mp4 of (H, W, 3) uint8 `frames`, stored turned by -`rotation` degrees and tagged (display-matrix side
    datum) to be shown turned `rotation` degrees counter-clockwise, i.e. upright, as phones write portrait videos."""
    import av
    import numpy as np

    from facex_data.decode import upright

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stored = [np.ascontiguousarray(upright(f, -rotation)) for f in frames]
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12"}
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in stored:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(*args: str, env: dict[str, str], **popen) -> Iterator[tuple[subprocess.Popen, int]]:
    """`ray start --head --block` on free ports, its dashboard on 127.0.0.1 only, in a process group of its own:
    the job agent too (on Ray's fixed default, 52365, it cannot serve while another Ray on the machine holds that
    port, and every `ray job submit` then answers "No available agent" until it gives up). Yields (the head
    process, the dashboard port); on the way out that head and its processes stop, no other Ray."""
    dashboard = free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={free_port()}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}", "--disable-usage-stats", *args],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen,
    )  # fmt: skip
    try:
        yield head, dashboard
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
