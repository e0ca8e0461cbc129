"""FaceX model: FORD representations, FORS assemblers and the Facial Representation Controller."""

__version__ = "0.1.0"
