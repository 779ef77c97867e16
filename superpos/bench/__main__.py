"""``python -m superpos.bench``: the throughput benchmark without the ``superpos`` console script."""

from superpos.bench.throughput import main

raise SystemExit(main())
