"""Case files: YAML parsed into frozen, validated cases. Torch-free: never imports the engine.

`reader` reads a file; `kinds` is the table of case kinds, one parser module each
(`completion`, `patching`, `families`); `base` holds what every kind shares; `validation` is the
one toolkit their error messages come from; `sequences`, `bindings` and `sampling` are the template
arithmetic, the bindings in range and the variant samples; `yamlsource` is the line-remembering
YAML loader. A patching case's claims are parsed in `claims` (patching, logit lens, attribution,
and the one dispatch), `circuit_claims` and `path_claims`, with `claim_fields` what they share;
its `ablation:` and named `circuits:` in `circuits`.
"""
