"""Summarize py-spy's collapsed stacks: the functions with the most samples, self and total."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def main() -> None:
    """Print the top functions of a collapsed-stacks file by inclusive and self samples."""
    path = Path(sys.argv[1])
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        for frame in set(frames):
            total[frame] += count
        own[frames[-1]] += count
    print(f"{samples} samples")
    print("-- inclusive --")
    for frame, count in total.most_common(limit):
        print(f"{100 * count / samples:5.1f}%  {frame}")
    print("-- self --")
    for frame, count in own.most_common(limit // 2):
        print(f"{100 * count / samples:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
