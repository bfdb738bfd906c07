"""Split a volume into tiles whose cores partition it, so every voxel is computed by exactly one tile.

Each tile adds ``margin`` voxels of context around its core; outputs are kept only on the core. With no
overlap in the kept parts, statistics summed over cores equal those of one whole-volume pass.
"""

import math


def _axis_plan(length, max_tile, margin, multiple):
    if length <= max_tile:
        return [((0, length), (0, length))]
    core_room = max_tile - 2 * margin
    n_tiles = math.ceil(length / core_room)
    core = math.ceil(length / n_tiles / multiple) * multiple
    plan = []
    for start in range(0, length, core):
        end = min(start + core, length)
        plan.append(((max(start - margin, 0), min(end + margin, length)), (start, end)))
    return plan


def plan_tiles(shape, max_tile, margin, multiple):
    """Yield (tile, core) pairs of slice tuples over a volume of ``shape``.

    ``shape``, ``max_tile`` and ``margin`` must be multiples of ``multiple`` so every tile and core can be
    halved by each encoder level.
    """
    plans = [_axis_plan(length, tile, margin, multiple) for length, tile in zip(shape, max_tile)]
    for (tz, cz) in plans[0]:
        for (ty, cy) in plans[1]:
            for (tx, cx) in plans[2]:
                yield (slice(*tz), slice(*ty), slice(*tx)), (slice(*cz), slice(*cy), slice(*cx))
