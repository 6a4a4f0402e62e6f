"""Cost of one fold into the reproducible (double-double) Gaussian state against a plain float64 Chan merge.

    .venv/bin/python benchmarks/accumulator_fold.py [--cells 240] [--width 576] [--rows 256]

The peer is the textbook pairwise update (Chan, Golub & LeVeque 1979) that the state used before
it had to be reproducible across ranks: fold moments from a float32 Gram of centred rows, merged
into a float64 mean and comoment. Both use the same Gram kernel; defaults are SmolLM2's IE state
(30 blocks x 8 positions, 2 x 576 wide).
"""
from __future__ import annotations

import argparse
import time

import torch

from emergence_fast import GaussianMIAccumulator
from emergence_fast.estimators import gaussian


class ChanPeer:
    def __init__(self, cells: int, dim: int):
        self.count = torch.zeros(cells, dtype=torch.int64)
        self.mean = torch.zeros(cells, dim, dtype=torch.float64)
        self.comoment = torch.zeros(cells, dim, dim, dtype=torch.float64)

    def update(self, z: torch.Tensor) -> None:
        step = max(1, (1 << 25) // z.shape[-1] ** 2)
        for lo in range(0, z.shape[0], step):
            cells = slice(lo, lo + step)
            n_b, mean_b, m_b = gaussian.moments(z[cells])
            n_a = self.count[cells]
            total = (n_a + n_b).to(torch.float64)
            delta = mean_b - self.mean[cells]
            cross = (n_a.to(torch.float64) * n_b / total).unsqueeze(-1)
            self.comoment[cells].add_(m_b).baddbmm_(delta.unsqueeze(-1), (cross * delta).unsqueeze(-2))
            self.mean[cells].add_(delta * (n_b / total).unsqueeze(-1))
            self.count[cells] += n_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=240)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--rows", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.cells, args.rows, args.width) * 3 + 100
    y = torch.randn(args.cells, args.rows, args.width)
    state = GaussianMIAccumulator(args.width, args.width, (args.cells,))
    peer = ChanPeer(args.cells, 2 * args.width)
    z = torch.cat([x, y], -1)
    print(f"{args.cells} cells of {2 * args.width}^2, {args.rows} new rows per fold, {torch.get_num_threads()} threads")
    for fold in range(3):
        start = time.perf_counter()
        state.update(x, y)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        peer.update(z)
        chan = time.perf_counter() - start
        print(f"fold {fold}: double-double {ours:.2f} s, Chan float64 {chan:.2f} s, ratio {ours / chan:.2f}"
              + ("  (first fold: taken as it is)" if fold == 0 else ""))
    diff = (state.comoment - peer.comoment).abs().max() / peer.comoment.abs().max()
    print(f"max relative difference of the comoments: {float(diff):.1e}")


if __name__ == "__main__":
    main()
