"""kvaudit's rules: one module per rule, plus the claims registry ``papers.toml``.

Each rule is a small class (see ``kvaudit.rule.Rule``) with its id, severity, message,
documentation and embedded valid and invalid examples; the test suite runs the examples.
"""
