"""What this CPU can do, read once: the one probe every kernel choice of resnetzoo goes through.

The fast paths depend on the CPU: oneDNN computes bfloat16 convolutions natively only
with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT (fast with AVX-512 BF16 and AMX), float16
only with AVX-512 FP16 or AMX-FP16, and int8 fast with VNNI or AMX. An AVX2-only
CPU (many AMD EPYC) has none of these. :func:`cpu_features` asks PyTorch once per
process and logs the answer once; everything that branches on the CPU calls it, so a
test can force any answer (``monkeypatch.setattr(resnetzoo.inference.cpu,
"cpu_features", lambda: CpuFeatures(...))``) and run every branch on any machine.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from resnetzoo.inference import onednn

__all__ = ["CpuFeatures", "cpu_features"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU features that decide which kernels run fastest (and which run at all).

    Attributes:
        capability: PyTorch's vectorisation level for its own kernels
            (``torch.backends.cpu.get_cpu_capability()``: ``"DEFAULT"``, ``"AVX2"``,
            ``"AVX512"``, ``"NO AVX"``, ``"SVE256"`` ...).
        avx2: AVX2 instructions.
        avx512: AVX-512 F, BW, VL and DQ.
        avx512_bf16: AVX-512 BF16 (bfloat16 dot products).
        amx: AMX tiles with bfloat16 and int8 (Sapphire Rapids and later).
        vnni: int8 dot products (AVX-512 VNNI or AVX-VNNI).
        onednn: PyTorch has oneDNN and the fused-convolution ops resnetzoo calls.
        onednn_bf16: oneDNN computes bfloat16 convolutions natively here.
        onednn_fp16: oneDNN computes float16 convolutions natively here.
    """

    capability: str
    avx2: bool = False
    avx512: bool = False
    avx512_bf16: bool = False
    amx: bool = False
    vnni: bool = False
    onednn: bool = False
    onednn_bf16: bool = False
    onednn_fp16: bool = False

    def native(self, dtype: torch.dtype) -> bool:
        """Whether oneDNN convolutions run natively in ``dtype`` (float32, bfloat16 or float16) here."""
        if not self.onednn:
            return False
        return {torch.float32: True, torch.bfloat16: self.onednn_bf16, torch.float16: self.onednn_fp16}.get(
            dtype, False
        )

    def __str__(self) -> str:
        flags = [name for name, on in (("AVX2", self.avx2), ("AVX-512", self.avx512),
                                       ("AVX-512 BF16", self.avx512_bf16), ("AMX", self.amx),
                                       ("VNNI", self.vnni)) if on]
        dtypes = [name for name, on in (("fp32", self.onednn), ("bf16", self.onednn_bf16),
                                        ("fp16", self.onednn_fp16)) if on]
        return (f"capability {self.capability} ({', '.join(flags) or 'no AVX2'}); "
                f"oneDNN native: {', '.join(dtypes) or 'not available'}")


def _read() -> CpuFeatures:
    """Ask PyTorch (``torch.cpu.get_capabilities`` where it exists, else its older probes)."""
    caps = dict(torch.cpu.get_capabilities()) if hasattr(torch.cpu, "get_capabilities") else {}

    def has(*names: str) -> bool:
        return all(bool(caps.get(name, False)) for name in names)

    if not caps:  # torch < 2.9: only the older, coarser private probes exist
        caps = {
            "avx2": getattr(torch.cpu, "_is_avx2_supported", lambda: False)(),
            "avx512_f": getattr(torch.cpu, "_is_avx512_supported", lambda: False)(),
            "avx512_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)(),
            "amx_tile": getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)(),
            "avx512_vnni": getattr(torch.cpu, "_is_vnni_supported", lambda: False)(),
        }
        caps.update(avx512_bw=caps["avx512_f"], avx512_vl=caps["avx512_f"], avx512_dq=caps["avx512_f"],
                    amx_bf16=caps["amx_tile"], amx_int8=caps["amx_tile"])
    return CpuFeatures(
        capability=torch.backends.cpu.get_cpu_capability(),
        avx2=has("avx2"),
        avx512=has("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"),
        avx512_bf16=has("avx512_bf16"),
        amx=has("amx_tile", "amx_bf16", "amx_int8"),
        vnni=has("avx512_vnni") or has("avx_vnni"),
        onednn=onednn.available(),
        onednn_bf16=onednn.supports(torch.bfloat16),
        onednn_fp16=onednn.supports(torch.float16),
    )


@functools.cache
def cpu_features() -> CpuFeatures:
    """This CPU's features, read once per process and logged once (INFO, ``resnetzoo`` logger).

    Returns:
        A :class:`CpuFeatures`; ``str()`` of it is a one-line summary such as
        ``capability AVX512 (AVX2, AVX-512, AVX-512 BF16, AMX, VNNI); oneDNN native: fp32, bf16, fp16``.
    """
    features = _read()
    logger.info("CPU features: %s", features)
    return features
