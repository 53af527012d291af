"""Per-request arrays extracted from an instance once, shared by every predictor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlmio_opt.domain.instance import Instance


@dataclass(frozen=True)
class RequestArrays:
    """Column arrays over the window's requests (length R) and their images (length I)."""

    site_idx: np.ndarray
    arrival_s: np.ndarray
    wait_s: np.ndarray
    prompt_tokens: np.ndarray
    max_output_tokens: np.ndarray
    task: np.ndarray
    min_quality: np.ndarray
    deadline_s: np.ndarray
    num_images: np.ndarray
    upload_bytes: np.ndarray
    image_request: np.ndarray
    image_width: np.ndarray
    image_height: np.ndarray
    image_bytes: np.ndarray

    @property
    def num_requests(self) -> int:
        return len(self.arrival_s)

    def per_request_sum(self, image_values: np.ndarray) -> np.ndarray:
        """Sum a per-image array into a per-request array."""
        return np.bincount(self.image_request, weights=image_values, minlength=self.num_requests)


def resolution_quality(accuracy: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Published ``accuracy`` moved by a resolution ``shift`` on the log-odds scale.

    ``logit(q) = logit(accuracy) + shift``, written as ``a e^s / (1 - a + a e^s)`` so that an
    accuracy of exactly 0 or 1 stays there: a probability by construction, for any shift. (The
    earlier ``accuracy * exp(shift)`` left [0, 1] for 11% of the committed windows' pairs and was
    clipped.) A shift of 0 (an image seen as well as the benchmark's) gives the published
    accuracy.
    """
    accuracy = np.asarray(accuracy, dtype=float)
    scaled = accuracy * np.exp(np.minimum(shift, 700.0))  # exp overflows past ~709
    return scaled / (1.0 - accuracy + scaled)


def request_arrays(instance: Instance) -> RequestArrays:
    """Extract :class:`RequestArrays` from ``instance``."""
    reqs = instance.requests
    site_index = {s: i for i, s in enumerate(instance.network.sites)}
    images = [(r_idx, im) for r_idx, r in enumerate(reqs) for im in r.images]
    arrival = np.array([r.arrival_s for r in reqs], dtype=float)
    prompt = np.array([r.prompt_tokens for r in reqs], dtype=float)
    image_bytes = np.array([im.bytes for _, im in images], dtype=float)
    image_request = np.array([i for i, _ in images], dtype=np.int64)
    upload = np.bincount(image_request, weights=image_bytes, minlength=len(reqs)) + 4.0 * prompt
    return RequestArrays(
        site_idx=np.array([site_index[r.site] for r in reqs], dtype=np.int64),
        arrival_s=arrival,
        wait_s=np.maximum(instance.window_s - arrival, 0.0),
        prompt_tokens=prompt,
        max_output_tokens=np.array([r.max_output_tokens for r in reqs], dtype=float),
        task=np.array([r.task for r in reqs], dtype=object),
        min_quality=np.array(
            [np.nan if r.min_quality is None else r.min_quality for r in reqs], dtype=float
        ),
        deadline_s=np.array(
            [np.inf if r.deadline_s is None else r.deadline_s for r in reqs], dtype=float
        ),
        num_images=np.array([len(r.images) for r in reqs], dtype=np.int64),
        upload_bytes=upload,
        image_request=image_request,
        image_width=np.array([im.width for _, im in images], dtype=np.int64),
        image_height=np.array([im.height for _, im in images], dtype=np.int64),
        image_bytes=image_bytes,
    )
