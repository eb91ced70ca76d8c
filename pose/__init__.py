"""c2f-pose: coarse-to-fine volumetric 3D human pose estimation."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: ``import pose`` stays cheap; ``pose.Predictor`` pulls in the model on first use.
    if name == "Predictor":
        from pose.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'pose' has no attribute {name!r}")
