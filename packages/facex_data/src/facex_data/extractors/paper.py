"""The paper backend (DESIGN §3): the representations FaceX is defined on, from weights in the models dir.

- detection + 5 points: insightface SCRFD (``model_zoo.get_model(local_path)``), or dlib's shipped HOG
  detector (``extract.detector: dlib``); 68 landmarks for ``lmk.npy`` from dlib's shipped predictor;
- identity: ArcFace iresnet100 (glint360k), PyTorch ``.pth`` or ONNX: the 512-d embedding of the
  ``face_align.norm_crop`` 112-px crop and the layer-4 map of the 128-px crop (``idmap.npy``);
- parsing: BiSeNet, 19 CelebAMask-HQ classes, on the aligned crop at 512 px;
- 3DMM: Deep3DFaceRecon ResNet-50 on its own 224-px crop, cut as upstream's ``align_img`` cuts it;
- gaze: L2CS-Net ResNet-50 (binned yaw/pitch) on a 448-px face crop.

Every model runs batched; on CUDA under fp16 autocast (BiSeNet, ResNet-50s, ArcFace) or ONNX Runtime's
CUDA provider. Region masks (brows, eyes, ...) are derived from the 19-class map by the model package
(``facex_model.regions``: the one place that groups classes into regions).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from facex_data import schema
from facex_data.extractors import (
    AlignedFaces,
    Detection,
    ExtractorOptions,
    ExtractorSet,
    register_backend,
    sha256_file,
)
from facex_data.extractors.align import ARCFACE_112, crop_template, similarity_transform
from facex_data.extractors.nets import CheckpointError, count_blocks, load_strict, read_state_dict
from facex_data.extractors.nets.bisenet import BiSeNet
from facex_data.extractors.nets.heads import L2CS, PUPIL_HEAD, RECON_HEADS, ReconNet
from facex_data.extractors.nets.iresnet import IResNet
from facex_data.extractors.offline import DlibAligner
from facex_data.weights import paper_extract_keys, require_weights, resolve_weights_dir

VERSION = "1"
PARSING_CLASSES = schema.PARSING_CLASSES  # the full 19-class map: no pixel is UNKNOWN
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
SCRFD_INPUT = (640, 640)  # insightface's default detection size
BISENET_INPUT = 512
DEEP3D_INPUT, DEEP3D_RESCALE = 224, 102.0  # Deep3DFaceRecon's align_img target size and rescale factor
GAZE_INPUT = 448
GAZE_FACE_SCALE = 0.78  # ArcFace template shrunk so the crop frames the face like a detector box
# L2CS bins: Gaze360 checkpoints have 90 bins of 4 deg from -180, MPIIGaze ones 28 bins of 3 deg from -42
GAZE_BINS = {90: (4.0, -180.0), 28: (3.0, -42.0)}
# L2CS's first head is the horizontal angle, + = towards image left; its second, + = up (upstream's
# vis.draw_gaze): both are negated into the schema's convention (+ = image right / down)
GAZE_SIGN = np.array([-1.0, -1.0], np.float32)


def torch_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"extract.device is {device!r} but torch sees no CUDA device; set extract.device: cpu")
    return torch.device(device)


def autocast(device: torch.device):
    """fp16 autocast on CUDA (these CNNs were trained or are commonly run in fp16), nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def to_tensor(images: np.ndarray, device: torch.device, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32, (x / 255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.as_tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, device=device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def warp(image: np.ndarray, m: np.ndarray, size: int, flags: int = cv2.INTER_LINEAR) -> np.ndarray:
    return cv2.warpAffine(image, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        # the torch models still run on the GPU; only the ONNX ones (detector, ONNX ArcFace) fall back
        warnings.warn(
            "extract.device is cuda but onnxruntime has no CUDA provider: the ONNX models run on the CPU; "
            "install onnxruntime-gpu in place of onnxruntime to run them on the GPU",
            stacklevel=2,
        )
    return ["CPUExecutionProvider"]


def onnx_session_options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())  # the actor's CPU share, as torch has it
    options.log_severity_level = 3
    return options


def onnx_session(model, device: str):
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, onnx_session_options(), providers=onnx_providers(device))


class ScrfdAligner:
    """insightface SCRFD (largest face kept), its 5 points for alignment, dlib's 68 landmarks in its box."""

    name = "insightface-scrfd"

    def __init__(self, options: ExtractorOptions, path: Path) -> None:
        import dlib
        from insightface.model_zoo import get_model

        from facex_data.faces import dlib_model_path

        self.num_gpus = 1.0 if options.device.startswith("cuda") else 0.0
        try:
            self.model = get_model(
                str(path), providers=onnx_providers(options.device), sess_options=onnx_session_options()
            )
        except Exception as err:  # onnxruntime / protobuf parse errors: a corrupt or foreign file
            raise CheckpointError(f"{path}: not a loadable ONNX detector ({err}); re-download it") from err
        if self.model is None or getattr(self.model, "taskname", None) != "detection" or not self.model.use_kps:
            raise CheckpointError(f"{path} is not an SCRFD detector with 5 keypoints (e.g. buffalo_l det_10g.onnx)")
        self.model.prepare(ctx_id=0 if options.device.startswith("cuda") else -1, input_size=SCRFD_INPUT)
        predictor_path = dlib_model_path("landmarks68")
        self.predictor = dlib.shape_predictor(str(predictor_path))
        self.weights = {path.name: sha256_file(path), predictor_path.name: sha256_file(predictor_path)}
        self.version = f"insightface-{_insightface_version()}/{VERSION}"
        self.size = options.crop_size
        self.template = crop_template(self.size)

    def __call__(self, frames: np.ndarray) -> list[Detection | None]:
        return [self.align(frame) for frame in frames]

    def align(self, frame: np.ndarray) -> Detection | None:
        import dlib

        image = np.ascontiguousarray(frame)
        boxes, kpss = self.model.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if boxes is None or len(boxes) == 0:
            return None
        i = int(_ranked(boxes)[0])
        left, top, right, bottom = (int(round(v)) for v in boxes[i, :4])
        points5 = kpss[i].astype(np.float64)
        m = similarity_transform(points5, self.template)
        crop = warp(image, m, self.size)
        shape = self.predictor(image, dlib.rectangle(left, top, right, bottom))
        points68 = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        landmarks = (points68 @ m[:, :2].T + m[:, 2]).astype(np.float32)
        crop_points5 = (points5 @ m[:, :2].T + m[:, 2]).astype(np.float32)
        return Detection(crop, landmarks, (left, top, right, bottom), len(boxes), m, crop_points5)

    def boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        boxes, _ = self.model.detect(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        if boxes is None or len(boxes) == 0:
            return []
        return [tuple(int(round(v)) for v in boxes[i, :4]) for i in _ranked(boxes)]


def _ranked(boxes: np.ndarray) -> np.ndarray:
    """Indices of SCRFD's (N, 5) boxes, largest first; ties broken by position."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.lexsort((boxes[:, 1], boxes[:, 0], -areas))


def _insightface_version() -> str:
    import insightface

    return insightface.__version__


def arcface_crops(faces: AlignedFaces, size: int) -> np.ndarray:
    """insightface ``face_align.norm_crop`` of every face (112: ArcFace template; 128: +8 px in x)."""
    from insightface.utils import face_align

    with warnings.catch_warnings():  # insightface calls a scikit-image API deprecated in 0.26
        warnings.simplefilter("ignore", FutureWarning)
        return np.stack([face_align.norm_crop(c, p, image_size=size) for c, p in zip(faces.crops, faces.points5)])


class ArcFaceTorch:
    """iresnet100 from arcface_torch's ``backbone.pth`` (depth read from the keys)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        state = read_state_dict(path)
        layers = count_blocks(state)
        if min(layers) == 0 or "fc.weight" not in state:
            raise CheckpointError(
                f"{path} is not an ArcFace iresnet checkpoint (no layer1..4 / fc keys); expected arcface_torch's "
                "backbone.pth (keys conv1.weight, layer1.0.bn1.weight, ..., fc.weight)"
            )
        self.model = load_strict(IResNet(layers), state, path, f"ArcFace iresnet{2 * sum(layers) + 2}").to(device)
        self.device = device

    @torch.inference_mode()
    def __call__(self, crop112: np.ndarray, crop_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = np.full(3, 0.5, np.float32)
        with autocast(self.device):
            fmap112 = self.model.feature_map(to_tensor(crop112, self.device, half, half))
            embedding = self.model.embed(fmap112)
            fmap = self.model.feature_map(to_tensor(crop_map, self.device, half, half))
        return embedding.float().cpu().numpy(), fmap.float().cpu().numpy()


def layer4_tensor(graph) -> str:
    """Name of the layer-4 map in an ArcFace ONNX graph: the input of the head (BN -> Flatten -> Gemm)."""
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type in ("Flatten", "Reshape"):
            name = node.input[0]
            while name in producer and producer[name].op_type in ("BatchNormalization", "Dropout", "Identity"):
                name = producer[name].input[0]
            return name
    raise KeyError("no Flatten/Reshape head")


class ArcFaceOnnx:
    """An ArcFace ONNX model run by onnxruntime, with its layer-4 map exposed by graph surgery.

    Session 1: the model with the layer-4 tensor added as a second graph output (112-px crop: the
    embedding and a 7x7 map). Session 2, for other map sizes: the subgraph from the input to that
    tensor with free spatial dims (the fc head only accepts 7x7).
    """

    def __init__(self, path: Path, device: str, map_size: int) -> None:
        import onnx
        import onnx.utils

        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable ONNX model ({err}); re-download it") from err
        graph = model.graph
        try:
            self.map_name = layer4_tensor(graph)
        except KeyError as err:
            raise CheckpointError(
                f"{path}: no ArcFace head (Flatten/Reshape -> Gemm) in this ONNX graph; "
                "expected an iresnet recognition model such as glintr100.onnx"
            ) from err
        self.input_name = graph.input[0].name
        self.embed_name = graph.output[0].name
        if self.map_name not in {o.name for o in graph.output}:
            graph.output.append(onnx.helper.make_tensor_value_info(self.map_name, onnx.TensorProto.FLOAT, None))
        batch = graph.input[0].type.tensor_type.shape.dim[0]
        self.per_sample = batch.HasField("dim_value") and batch.dim_value == 1  # exported for one image
        self.full = onnx_session(model, device)
        self.trunk = None
        if map_size != schema.ARCFACE_CROP:
            trunk = onnx.utils.Extractor(model).extract_model([self.input_name], [self.map_name])
            dims = trunk.graph.input[0].type.tensor_type.shape.dim
            for i, label in ((0, "batch"), (2, "height"), (3, "width")):
                dims[i].dim_param = label
            del trunk.graph.value_info[:]  # shapes inferred for 112 px no longer hold
            trunk.graph.output[0].type.tensor_type.ClearField("shape")
            self.trunk = onnx_session(trunk, device)

    def __call__(self, crop112: np.ndarray, crop_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = np.full(3, 0.5, np.float32)
        x = to_tensor(crop112, torch.device("cpu"), half, half).numpy()
        if self.per_sample:
            runs = [
                self.full.run([self.embed_name, self.map_name], {self.input_name: x[i : i + 1]}) for i in range(len(x))
            ]
            embedding, fmap = (np.concatenate(parts) for parts in zip(*runs))
        else:
            embedding, fmap = self.full.run([self.embed_name, self.map_name], {self.input_name: x})
        if self.trunk is not None:
            x = to_tensor(crop_map, torch.device("cpu"), half, half).numpy()
            (fmap,) = self.trunk.run([self.map_name], {self.input_name: x})
        if fmap.ndim != 4 or fmap.shape[1] != schema.IDMAP_SHAPE[0]:
            raise CheckpointError(
                f"ArcFace ONNX tensor {self.map_name!r} has shape {fmap.shape}, expected the "
                f"layer-4 map (B, {schema.IDMAP_SHAPE[0]}, H, W)"
            )
        return embedding, fmap


class ArcFaceIdentity:
    """identity: L2-normalised 512-d embedding (id.npy) and the layer-4 map (idmap.npy)."""

    name = "arcface-iresnet100-glint360k"

    def __init__(self, options: ExtractorOptions, path: Path) -> None:
        self.num_gpus = 1.0 if options.device.startswith("cuda") else 0.0
        self.weights = {path.name: sha256_file(path)}
        if path.suffix == ".onnx":
            import onnxruntime

            self.runner = ArcFaceOnnx(path, options.device, schema.IDMAP_CROP)
            self.version = f"onnxruntime-{onnxruntime.__version__}/{VERSION}"
        else:
            self.runner = ArcFaceTorch(path, torch_device(options.device))
            self.version = f"torch-{torch.__version__}/{VERSION}"

    def __call__(self, faces: AlignedFaces) -> tuple[np.ndarray, np.ndarray]:
        crop112 = arcface_crops(faces, schema.ARCFACE_CROP)
        crop_map = arcface_crops(faces, schema.IDMAP_CROP)
        embedding, fmap = self.runner(crop112, crop_map)
        if fmap.shape[1:] != schema.IDMAP_SHAPE:
            raise ValueError(f"ArcFace map is {fmap.shape[1:]}, schema.IDMAP_SHAPE says {schema.IDMAP_SHAPE}")
        embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
        return embedding.astype(np.float32), fmap.astype(schema.IDMAP_DTYPE)


class BiSeNetParsing:
    """parsing.png: BiSeNet's 19-class argmax on the aligned crop resized to 512, back at crop size."""

    name = "bisenet-celebamaskhq-19"

    def __init__(self, options: ExtractorOptions, path: Path) -> None:
        self.device = torch_device(options.device)
        self.num_gpus = 1.0 if self.device.type == "cuda" else 0.0
        state = read_state_dict(path)
        self.model = load_strict(
            BiSeNet(len(schema.PARSING_CLASSES)), state, path, "BiSeNet 19-class face-parsing (79999_iter.pth)"
        ).to(self.device)
        self.weights = {path.name: sha256_file(path)}
        self.version = f"torch-{torch.__version__}/{VERSION}"
        self.size = options.crop_size

    @torch.inference_mode()
    def __call__(self, faces: AlignedFaces) -> np.ndarray:
        images = np.stack(
            [cv2.resize(c, (BISENET_INPUT, BISENET_INPUT), interpolation=cv2.INTER_LINEAR) for c in faces.crops]
        )
        with autocast(self.device):
            logits = self.model(to_tensor(images, self.device, IMAGENET_MEAN, IMAGENET_STD))
        labels = logits.argmax(1).to(torch.uint8).cpu().numpy()
        return np.stack([cv2.resize(m, (self.size, self.size), interpolation=cv2.INTER_NEAREST) for m in labels])


def load_lm3d(path: Path) -> np.ndarray:
    """Deep3DFaceRecon's 5-point 3-D template from ``similarity_Lm3D_all.mat`` (68 x 3 ``lm``): eye
    centres, nose tip, mouth corners, as upstream's ``load_lm3d`` selects them."""
    from scipy.io import loadmat

    try:
        lm = np.asarray(loadmat(str(path))["lm"], np.float64)
    except Exception as err:
        raise CheckpointError(f"{path}: not Deep3DFaceRecon's similarity_Lm3D_all.mat ({err})") from err
    if lm.shape != (68, 3):
        raise CheckpointError(f"{path}: 'lm' has shape {lm.shape}, expected (68, 3) 3-D landmarks")
    return np.stack([lm[[36, 39]].mean(0), lm[[42, 45]].mean(0), lm[30], lm[48], lm[54]])


def pos(xp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Scaled orthographic fit of 3-D points ``x`` (N, 3) to 2-D ``xp`` (N, 2): translation and scale."""
    n = len(xp)
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3], a[0::2, 3] = x, 1
    a[1::2, 4:7], a[1::2, 7] = x, 1
    k = np.linalg.lstsq(a, xp.reshape(-1), rcond=None)[0]
    return np.array([k[3], k[7]]), (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2


def deep3d_crop(image: np.ndarray, points5: np.ndarray, lm3d: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's input crop, cut exactly as upstream's ``util/preprocess.py`` ``align_img`` /
    ``resize_n_crop_img`` cut it (after its loader flips y: ``lm[:, 1] = H - 1 - lm[:, 1]``, in float32).

    A scaled-orthographic fit of the 5 points to the template gives (t, s); s = 102 / s; the image is resized
    with PIL BICUBIC to (int(w0 s), int(h0 s)) and cropped at integer offsets (left, up), each truncated toward
    zero as numpy's ``astype(np.int32)`` does; PIL fills what lies outside the image with black. No rotation.
    """
    h0, w0 = image.shape[:2]
    lm = np.asarray(points5, np.float32).copy()
    lm[:, 1] = h0 - 1 - lm[:, 1]
    t, s = pos(lm, lm3d)
    s = DEEP3D_RESCALE / s
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - DEEP3D_INPUT / 2 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - DEEP3D_INPUT / 2 + (h0 / 2 - t[1]) * s)
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((w, h), resample=Image.Resampling.BICUBIC)
    return np.asarray(resized.crop((left, up, left + DEEP3D_INPUT, up + DEEP3D_INPUT)))


class Deep3DCoefficients:
    """tdmm.npy: Deep3DFaceRecon's 257 coefficients (+4 pupil coefficients when the head is there)."""

    name = "deep3dfacerecon-resnet50"

    def __init__(self, options: ExtractorOptions, path: Path, lm3d_path: Path) -> None:
        self.device = torch_device(options.device)
        self.num_gpus = 1.0 if self.device.type == "cuda" else 0.0
        state = read_state_dict(path, unwrap=("net_recon",))
        layers = count_blocks(state, "backbone.")
        n_heads = len({k.split(".")[1] for k in state if k.startswith("final_layers.")})
        if min(layers) == 0 or n_heads not in (len(RECON_HEADS), len(RECON_HEADS) + 1):
            raise CheckpointError(
                f"{path} is not a Deep3DFaceRecon checkpoint: expected {{'net_recon': state "
                f"dict}} with backbone.layer1..4 and {len(RECON_HEADS)} final_layers "
                f"(found layers {layers}, {n_heads} heads)"
            )
        self.pupil = n_heads == len(RECON_HEADS) + 1
        self.model = load_strict(ReconNet(layers, self.pupil), state, path, "Deep3DFaceRecon ReconNet").to(self.device)
        self.lm3d = load_lm3d(lm3d_path)
        self.weights = {path.name: sha256_file(path), lm3d_path.name: sha256_file(lm3d_path)}
        self.version = f"torch-{torch.__version__}/{VERSION}"
        self.dim = schema.TDMM_DIM["paper"] + (PUPIL_HEAD if self.pupil else 0)

    @torch.inference_mode()
    def __call__(self, faces: AlignedFaces) -> np.ndarray:
        crops = np.stack([deep3d_crop(c, p, self.lm3d) for c, p in zip(faces.crops, faces.points5)])
        with autocast(self.device):
            coeffs = self.model(to_tensor(crops, self.device, np.zeros(3, np.float32), np.ones(3, np.float32)))
        return coeffs.float().cpu().numpy().astype(np.float32)


def gaze_template(size: int) -> np.ndarray:
    return ((ARCFACE_112 - 56.0) / 112.0 * GAZE_FACE_SCALE + 0.5) * size


class L2CSGaze:
    """gaze.npy: L2CS-Net's expected angle over its bins (softmax), degrees -> radians, schema signs."""

    name = "l2cs-net-resnet50"

    def __init__(self, options: ExtractorOptions, path: Path) -> None:
        self.device = torch_device(options.device)
        self.num_gpus = 1.0 if self.device.type == "cuda" else 0.0
        state = read_state_dict(path)
        layers = count_blocks(state)
        if min(layers) == 0 or "fc_yaw_gaze.weight" not in state:
            raise CheckpointError(
                f"{path} is not an L2CS-Net checkpoint (expected layer1..4 and fc_yaw_gaze / "
                "fc_pitch_gaze keys, as in L2CSNet_gaze360.pkl)"
            )
        bins = state["fc_yaw_gaze.weight"].shape[0]
        if bins not in GAZE_BINS:
            raise CheckpointError(f"{path}: {bins} gaze bins; known L2CS layouts have {sorted(GAZE_BINS)}")
        self.model = load_strict(L2CS(layers, bins), state, path, "L2CS-Net gaze").to(self.device)
        width, start = GAZE_BINS[bins]
        self.bin_angles = torch.arange(bins, dtype=torch.float32, device=self.device) * width + start
        self.weights = {path.name: sha256_file(path)}
        self.version = f"torch-{torch.__version__}/{VERSION}"
        self.template = gaze_template(GAZE_INPUT)

    @torch.inference_mode()
    def __call__(self, faces: AlignedFaces) -> np.ndarray:
        crops = np.stack(
            [
                warp(c, similarity_transform(p.astype(np.float64), self.template), GAZE_INPUT)
                for c, p in zip(faces.crops, faces.points5)
            ]
        )
        with autocast(self.device):
            yaw, pitch = self.model(to_tensor(crops, self.device, IMAGENET_MEAN, IMAGENET_STD))
        degrees = torch.stack([(torch.softmax(h.float(), 1) * self.bin_angles).sum(1) for h in (yaw, pitch)], 1)
        return (np.deg2rad(degrees.cpu().numpy()) * GAZE_SIGN).astype(np.float32)


@register_backend("paper")
def paper_backend(options: ExtractorOptions) -> ExtractorSet:
    """The four extractors share the aligner's 5 points; ArcFace adds the identity map (``idmap.npy``)."""
    if options.detector not in ("scrfd", "dlib"):
        raise ValueError(f"extract.detector must be scrfd or dlib, got {options.detector!r}")
    weights_dir = resolve_weights_dir(options.weights_dir)
    found = require_weights(weights_dir, paper_extract_keys(options.detector), "extract")
    aligner = ScrfdAligner(options, found["scrfd"]) if options.detector == "scrfd" else DlibAligner(options)
    tdmm = Deep3DCoefficients(options, found["deep3d"], found["deep3d_lm3d"])
    extra = {
        "idmap": {
            "shape": list(schema.IDMAP_SHAPE),
            "dtype": np.dtype(schema.IDMAP_DTYPE).name,
            "crop": schema.IDMAP_CROP,
            "tensor": "iresnet layer4 output (before bn2)",
        }
    }
    if tdmm.pupil:
        extra["tdmm_layout"] = {k: list(v) for k, v in schema.TDMM_OPTIONAL["paper"].items()}
    return ExtractorSet(
        backend="paper",
        aligner=aligner,
        parsing=BiSeNetParsing(options, found["bisenet"]),
        identity=ArcFaceIdentity(options, found["arcface"]),
        tdmm=tdmm,
        gaze=L2CSGaze(options, found["gaze"]),
        parsing_classes=PARSING_CLASSES,
        options=options,
        extra_description=extra,
    )
