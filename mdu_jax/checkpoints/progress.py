"""One progress bar style for both directions: bytes written, with a tensor counter."""

from __future__ import annotations

from tqdm.auto import tqdm


class Progress:
    """A tqdm bar over bytes that also shows ``tensors i/n``; silent when not `enabled`."""

    def __init__(self, desc: str, total_bytes: int, total_tensors: int, enabled: bool = True):
        self.total_tensors = total_tensors
        self.done = 0
        self.bar = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                        disable=not enabled, dynamic_ncols=True)

    def update(self, nbytes: int) -> None:
        self.done += 1
        self.bar.set_postfix_str(f"tensors {self.done}/{self.total_tensors}", refresh=False)
        self.bar.update(nbytes)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
