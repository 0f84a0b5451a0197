#!/usr/bin/env python
"""Count the parameters of every model variant beside the paper's Table 1 (docs/PAPER.md, 4).

    python tools/count_params.py          # Markdown table
    python tools/count_params.py --json   # one JSON object per model

The options and what is measured: ct_lesion_d2/benchmark/params.py.
"""

from ct_lesion_d2.benchmark.params import main

if __name__ == "__main__":
    main()
