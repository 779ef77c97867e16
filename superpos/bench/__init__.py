"""``superpos bench``: benchmarks (figures, not tests) and the one-shot GPU check.

Modules, from the command down:

* ``gpu_check``: ``superpos bench --gpu-check``, the CUDA path verified item by item, then the
  throughput bench in the time left;
* ``throughput``: ``superpos bench`` (and ``python -m superpos.bench``): every row for the sizes
  asked, the table, the summary line and the JSON;
* ``seq2seq`` and ``decoder``: the rows of the encoder-decoder (T5) and decoder-only (Llama)
  sizes;
* ``summary``: headline ratios and the table1.yaml projection; ``timing``: how a row is timed;
  ``workload``: models, batches, trials and the steps that are timed;
* ``startup``: ``superpos bench --startup``, a first and a second trial's start-up phase by
  phase (beside ``throughput``; it drives the Trainer itself, no row of the workload);
* ``options``: the command's options (light to import: ``superpos --help`` loads no model code).
"""
