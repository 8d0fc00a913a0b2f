"""The voice encoder: resemblyzer's pretrained GE2E model, loaded from its installed wheel, run by our code.

Why not ``import resemblyzer``: its modules import ``webrtcvad`` (a C extension without wheels
that fails to import on current setuptools) and the removed ``scipy.ndimage.morphology`` path at
import time. The weights (``resemblyzer/pretrained.pt``, 17 MB, Apache-2.0) are all scribed needs
from it; the network they fit is small and documented in its source: a 3-layer LSTM over 40-band
mel power spectrograms (25 ms windows, 10 ms hop, 16 kHz), a 256 -> 256 linear layer, ReLU, and L2
normalisation of the last layer's final hidden state.

Contract:
- :func:`weights_path` finds the file through the installed distribution's metadata without
  importing the package; absent, it raises :class:`~scribed.errors.ModelError` naming the install
  command. The file is read with ``torch.load(weights_only=True)`` (tensors only, no pickled code).
- :meth:`VoiceEncoder.features` is the network's input (librosa's mel filters, as in training);
  :meth:`VoiceEncoder.embed` turns windows of it into L2-normalised 256-d float32 embeddings.
  Features and embeddings exist only in memory.
- This module imports torch: it is loaded only in the worker (and by ``transcribe``/bench), never
  by the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from scribed.errors import ModelError

DISTRIBUTION = "resemblyzer"
INSTALL_HINT = "pip install --no-deps resemblyzer==0.1.4"
SAMPLE_RATE = 16000
N_MELS = 40
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
HIDDEN = 256
LAYERS = 3
EMBEDDING = 256


def weights_path() -> Path:
    """The installed ``resemblyzer/pretrained.pt``; ModelError with the install command if absent."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ModelError(f"speaker turns need the voice encoder's weights, which ship in the "
                         f"'{DISTRIBUTION}' package; install them once with:\n    {INSTALL_HINT}") from None
    path = Path(str(dist.locate_file("resemblyzer/pretrained.pt")))
    if not path.is_file():
        raise ModelError(f"the '{DISTRIBUTION}' package is installed but holds no pretrained.pt; reinstall it with:"
                         f"\n    {INSTALL_HINT}")
    return path


class _Network(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = torch.nn.Linear(HIDDEN, EMBEDDING)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)


class VoiceEncoder:
    """The loaded GE2E network (CPU: it is small, and the ASR model keeps the GPU)."""

    def __init__(self, path: Path | None = None, *, batch_size: int = 128) -> None:
        start = time.perf_counter()
        path = path or weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        except (OSError, RuntimeError, KeyError, EOFError) as exc:
            raise ModelError(f"cannot read the voice encoder's weights {str(path)!r}: {exc}") from exc
        self.network = _Network()
        # the checkpoint also holds GE2E's training-only similarity scale; the network ignores it
        missing, _ = self.network.load_state_dict(state, strict=False)
        if missing:
            raise ModelError(f"the voice encoder's weights {str(path)!r} lack {missing}")
        self.network.eval()
        self.batch_size = batch_size
        self.load_seconds = time.perf_counter() - start
        logger.debug("voice encoder loaded from {} in {:.2f} s", path, self.load_seconds)

    @staticmethod
    def features(samples: np.ndarray) -> np.ndarray:
        """16 kHz mono samples -> (frames, 40) mel power spectrogram, frame ``i`` centred on ``i`` * 10 ms."""
        import librosa

        mel = librosa.feature.melspectrogram(y=np.ascontiguousarray(samples, dtype=np.float32), sr=SAMPLE_RATE,
                                             n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
        return np.ascontiguousarray(mel.T, dtype=np.float32)

    @torch.inference_mode()
    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(frames, 40) spectrogram windows -> (n, 256) L2-normalised embeddings, in input order.

        Windows of equal length share batches (the LSTM reads each to its last frame, so they are
        never padded)."""
        out = np.empty((len(windows), EMBEDDING), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_length.setdefault(len(w), []).append(i)
        for indices in by_length.values():
            for j in range(0, len(indices), self.batch_size):
                batch = indices[j:j + self.batch_size]
                mels = torch.from_numpy(np.stack([windows[i] for i in batch]))
                out[batch] = self.network(mels).numpy()
        return out
