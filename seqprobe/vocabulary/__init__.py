"""The words seqprobe's parts share, each defined once and torch-free.

Case files, the engine, the checks, the records and the commands all name the same things:
patching sites and their hooks (`sites`), heads and layers (`heads`), metrics with their
direction and baseline tolerance and the thresholds that bound them (`metrics`), and the model
options of the plugin and the commands (`options`). A new site or metric is added here, once.
"""
