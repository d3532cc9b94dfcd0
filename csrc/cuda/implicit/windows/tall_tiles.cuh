// Tall tiles for the persistent window kernel, where the output channels fit one tile of at
// most 128 (ResNet-50's 64- and 128-channel 3x3 layers).
//
// A 128-pixel x 128-channel tile gives each stage half the tensor work of the seed conv's
// 128 x 256 tile for the same producer work (the stage's table, its window copies, its
// waits) and the same table reads per consumer thread. A tall unit covers 256 pixels: each
// consumer warpgroup multiplies two 64-row blocks per K step (two wgmma on one weight tile,
// one set of table entries), so a stage carries the 256-wide tile's tensor work again
// (bench/NOTES.md change 34).
//
// Half as many units fill the SMs worse, so units are planned per launch: with B 128-row
// blocks per CTA at most (ceil(blocks / ctas)), the first units are tall, floor(B / 2) per
// CTA, and the blocks left over (at most one per CTA, where B is odd) are 128-row units. A
// CTA then multiplies at most B blocks, as with 128-row tiles only, in fewer units.
//
// Contract: unit u (u < units) covers the output rows [first_row, first_row + 128 blocks) of
// every output-channel tile, blocks 2 for u < tall_units and 1 after; together the units
// cover the blocks [0, blocks) once each, in order.
#pragma once

#include <cstdint>

#include "../gather_mainloop.cuh"

namespace gwprune::cuda::implicit::windows {

constexpr int kTallTileRows = 2 * kTileRows;

struct TallTiles {
  int blocks = 0;      // 128-row blocks of the output: ceil(rows / 128)
  int tall_units = 0;  // the first units, two blocks each
};

struct TileUnit {
  int first_row;
  int blocks;  // 64-row blocks per consumer warpgroup: 2 (tall) or 1
};

GWPRUNE_HOST_DEVICE inline int tall_tile_units(const TallTiles& t) {
  return t.blocks - t.tall_units;
}

GWPRUNE_HOST_DEVICE inline TileUnit tall_tile_unit(const TallTiles& t, int u) {
  if (u < t.tall_units) return {u * kTallTileRows, 2};
  return {(t.tall_units + u) * kTileRows, 1};  // block 2 tall_units + (u - tall_units)
}

inline TallTiles plan_tall_tiles(int64_t rows, int ctas) {
  TallTiles t;
  t.blocks = static_cast<int>((rows + kTileRows - 1) / kTileRows);
  const int per_cta = (t.blocks + ctas - 1) / ctas;
  const int64_t tall = int64_t{ctas} * (per_cta / 2);
  t.tall_units = static_cast<int>(tall < t.blocks / 2 ? tall : t.blocks / 2);
  return t;
}

}  // namespace gwprune::cuda::implicit::windows
