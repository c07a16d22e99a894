"""Case files: YAML parsed into frozen, validated cases. Torch-free: never imports the engine.

`casefile` reads a file; `kinds` is the table of case kinds, one parser module each
(`completion`, `patching`, `families`); `base` holds what every kind shares; `validation` is the
one toolkit their error messages come from; `sequences` and `yamlsource` are the template
arithmetic and the line-remembering YAML loader.
"""
