"""FaceX data: video decoding, face extractors, Ray extraction pipeline, WebDataset shards."""

__version__ = "0.1.0"
