"""Project-wide pytest configuration: the plugins seqprobe's own tests rely on.

seqprobe's case-file plugin itself is registered through the `pytest11` entry point; nothing
here is needed to run `pytest cases/` in another project.
"""

pytest_plugins = ["pytester"]
