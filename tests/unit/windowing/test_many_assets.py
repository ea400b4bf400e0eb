"""10,000 assets through one Windower: every asset gets its windows, batched as (B, C, W)."""

from __future__ import annotations

import numpy as np

from stream_ae.windowing import GridSpec, Windower


def test_ten_thousand_assets_each_get_their_windows() -> None:
    n_assets, steps, c = 10_000, 13, 3
    spec = GridSpec(period_ms=1000, size=8, hop=4, lateness_ms=0, fill_limit=1, n_channels=c)
    w = Windower(spec)
    ids = [f"a{i:05d}" for i in range(n_assets)]
    t0 = 1_764_000_000_000
    starts: dict[str, list[int]] = {}
    offset = 0
    for s in range(steps):
        vals = np.full((n_assets, c), float(s))
        vals[:, 0] += np.arange(n_assets)  # asset identity in channel 0
        out = w.process(
            ids,
            np.zeros(n_assets, np.int64),
            np.arange(offset, offset + n_assets),
            np.full(n_assets, t0 + s * 1000, np.int64),
            vals,
            now_ms=t0,
        ).windows
        offset += n_assets
        assert out.values.dtype == np.float32
        assert out.values.shape[1:] == (c, spec.size)
        for a, st, v in zip(out.asset_ids, out.start_ms.tolist(), out.values, strict=True):
            starts.setdefault(a, []).append(st)
            assert v[0, 0] == int(a[1:]) + (st - t0) // 1000  # the right asset's own values
    assert len(w) == n_assets
    # t0 is a multiple of H seconds: windows start at steps 0 and 4; a bucket closes when
    # the next reading arrives (lateness 0), so [4, 12) needs step 12 (step 8 needs 17)
    assert all(starts[a] == [t0, t0 + 4000] for a in ids)
