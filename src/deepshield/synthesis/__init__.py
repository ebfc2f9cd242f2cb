"""Training fakes synthesised from real faces: self-blending (SBI) and cross-identity blending (Face X-ray)."""

from deepshield.synthesis.blend import FaceSample, SynthesisConfig, SynthesisResult, cross_blend, part_paste, self_blend

__all__ = ["FaceSample", "SynthesisConfig", "SynthesisResult", "cross_blend", "part_paste", "self_blend"]
