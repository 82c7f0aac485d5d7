"""From reader processes to the model's batches: the DataLoader over items of a few dozen
patches (so that every reader is busy even on small slides), and on the main side their
pixels on the encoder's device, decoded (``nvjpeg``) and resized (``tiles`` on CUDA)
there, joined into batches of the model's batch size."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..errors import CMTAError
from .resize import resize_batch

#: seconds the loop waits for one item from the reader processes before it gives up with
#: an error naming the slide (a stuck reader would otherwise hang the job until it is
#: killed, and the rest of the job would be lost)
READ_TIMEOUT_S = 300


def make_loader(dataset, start: int, n: int, batch_size: int, item_patches: int,
                workers: int, device: torch.device, timeout_s: float = READ_TIMEOUT_S):
    """Reader processes handing over rows ``start`` .. ``n`` in order, in items of at most
    ``item_patches`` rows that never straddle two model batches of ``batch_size`` (so that
    :func:`model_batches` joins them into exactly that size); ``workers`` 0: read in this
    process."""
    from ..compute import PREFETCH

    items = [list(range(i, min(i + item_patches, b + batch_size, n)))
             for b in range(start, n, batch_size)
             for i in range(b, min(b + batch_size, n), item_patches)]
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # items are already lists of patches
        sampler=items,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=PREFETCH if workers else None,  # items in flight per reader
        persistent_workers=False,
        timeout=timeout_s if workers else 0,
    )


def device_pixels(item: dict, dataset, device: torch.device) -> torch.Tensor:
    """The item's patches on ``device`` as the encoder takes them: uint8 (B, input_px,
    input_px, 3), decoded there (``nvjpeg`` items) and resized there when the readers
    handed them over as read."""
    if "streams" in item:
        px = decode_item(item, dataset, device)
    else:
        px = item["pixels"]
        px = torch.as_tensor(px).to(device, non_blocking=True)
    if px.shape[1] != dataset.input_px:
        px = resize_batch(px, dataset.input_px, dataset.filter)
    return px


def decode_item(item: dict, dataset, device: torch.device) -> torch.Tensor:
    """An ``nvjpeg`` item's patches (B, size, size, 3) on ``device``: its tile streams
    decoded there in one call of ``torchvision.io.decode_jpeg`` (nvJPEG on CUDA; libjpeg on
    the CPU, for tests) and pasted; a tile that fails to decode sends its patches to
    OpenSlide (read here), as the other readers do."""
    from torchvision.io import ImageReadMode, decode_jpeg

    index = np.asarray(item["index"])
    ok = np.asarray(item["ok"]).copy()
    size = dataset.size
    data = torch.as_tensor(item["streams"])
    ends = np.asarray(item["stream_ends"]).tolist()
    streams = [data[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    place = np.asarray(item["place"]).reshape(-1, 8)
    tiles = _decode_all(decode_jpeg, streams, ImageReadMode.RGB, device) if streams else []
    out = torch.zeros((len(index), size, size, 3), dtype=torch.uint8, device=device)
    redo = set()
    for j, s, dy, dx, sy, sx, h, w in place.tolist():
        t = tiles[s]
        if t is None:
            redo.add(j)
            continue
        out[j, dy:dy + h, dx:dx + w] = t[:, sy:sy + h, sx:sx + w].permute(1, 2, 0)
    fb = np.asarray(item["fallback"])
    if len(fb):
        out[torch.as_tensor(fb, device=device)] = torch.as_tensor(
            item["fallback_pixels"]).to(device)
    for j in sorted(redo):
        px, why = dataset.read_guarded(int(index[j]), dataset.read_openslide)
        if px is None:
            ok[j] = False
            item["error"] = item["error"] or why
            out[j] = 0
        else:
            out[j] = torch.from_numpy(px).to(device)
    item["ok"] = ok
    return out


def _decode_all(decode_jpeg, streams, mode, device) -> list:
    """Every stream decoded (C, H, W), in one batched call; if that fails, one by one with
    None for those that fail."""
    try:
        return list(decode_jpeg(streams, mode=mode, device=device))
    except Exception:  # noqa: BLE001 (find the bad tile(s); OpenSlide reads their patches)
        out = []
        for s in streams:
            try:
                out.append(decode_jpeg(s, mode=mode, device=device))
            except Exception:  # noqa: BLE001
                out.append(None)
        return out


def model_batches(loader, dataset, device: torch.device, batch_size: int,
                  slide_name: str) -> Iterator[tuple[dict, float]]:
    """(batch, seconds waited for the readers): the loader's items joined into batches of
    ``batch_size`` patches (the last may be shorter), pixels on ``device``. A reader that
    sends nothing for ``READ_TIMEOUT_S`` is an error naming the slide."""
    import time

    parts: list[dict] = []
    rows = 0
    waited = 0.0
    it = iter(loader)
    try:
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                break
            except RuntimeError as exc:
                if "timed out" in str(exc):
                    raise CMTAError(f"{slide_name}: no patches from the reader processes for "
                                    f"{READ_TIMEOUT_S} s (a stuck reader?); rerun, or "
                                    f"--workers 0 to read in the main process") from exc
                raise
            waited += time.perf_counter() - t
            item["pixels"] = device_pixels(item, dataset, device)
            parts.append(item)
            rows += len(item["index"])
            if rows >= batch_size:
                yield _join(parts), waited
                parts, rows, waited = [], 0, 0.0
        if parts:
            yield _join(parts), waited
    finally:
        del it  # stops the reader processes


def _join(parts: list[dict]) -> dict:
    if len(parts) == 1:
        p = parts[0]
        return {"index": np.asarray(p["index"]), "ok": np.asarray(p["ok"]),
                "error": p["error"], "pixels": p["pixels"]}
    return {"index": np.concatenate([np.asarray(p["index"]) for p in parts]),
            "ok": np.concatenate([np.asarray(p["ok"]) for p in parts]),
            "error": next((p["error"] for p in parts if p["error"]), ""),
            "pixels": torch.cat([p["pixels"] for p in parts])}
